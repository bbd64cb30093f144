/* batch.c - splitting a batch body into items: a JSON array or NDJSON.
 *
 * The form is told by the first character after any UTF-8 byte order mark
 * and white space: '[' is a JSON array, anything else NDJSON.  An array
 * must parse as a whole (one broken element leaves no way to find where
 * the next begins), and then each element that is not an object becomes
 * an error item.  NDJSON is parsed line by line, so a broken line costs
 * only that item; its error names the line (counted from 1, blank lines
 * included) so the client can find it.  A body holding one object spread
 * over several lines, as curl examples are written, is a batch of one.
 *
 * The item count is checked before the first callback so that an
 * oversized batch is refused whole, never half processed. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logpipe/event.h"
#include "logpipe/json.h"
#include "logpipe/util.h"

#include "logpipe/banned.h"

static const char *type_name(json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "a number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	case JSON_NULL:
		return "null";
	}
	return "a value";
}

/* Hands one parsed value to fn: objects as items, anything else as an
 * error.  line is the NDJSON line number, 0 for array elements. */
static int deliver(lp_batch_item_fn fn, void *ud, size_t index, json_t *v, size_t line)
{
	if (json_is_object(v))
		return fn(ud, index, v, NULL);
	char msg[96];
	if (line)
		snprintf(msg, sizeof(msg), "line %zu: expected a JSON object, not %s", line,
			 type_name(v));
	else
		snprintf(msg, sizeof(msg), "expected a JSON object, not %s", type_name(v));
	return fn(ud, index, NULL, msg);
}

static long empty_batch(char *err, size_t errlen)
{
	if (err && errlen)
		snprintf(err, errlen, "empty batch");
	return -EINVAL;
}

static long too_many(char *err, size_t errlen, size_t max_items)
{
	if (err && errlen)
		snprintf(err, errlen, "batch holds more than %zu items", max_items);
	return -E2BIG;
}

static bool blank(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
			return false;
	return true;
}

/* An array the scan is sure of: elements by their spans, no tree for the
 * whole.  Returns -ENOTSUP to leave the array to jansson. */
static long split_array_raw(const char *p, size_t n, size_t max_items, lp_batch_raw_fn raw,
			    lp_batch_item_fn fn, void *ud)
{
	struct lp_json_span *el;
	long count;
	size_t i = 0;

	if (max_items < 1 || max_items > 100000)
		return -ENOTSUP;
	el = lp_xcalloc(max_items, sizeof(*el));
	count = lp_json_array_spans(p, n, el, max_items);
	if (count <= 0) {
		free(el);
		return -ENOTSUP; /* the empty batch is worded by the full path */
	}
	while (i < (size_t)count) {
		int stop = -ENOTSUP;

		if (el[i].p[0] == '{')
			stop = raw(ud, i, el[i].p, el[i].n);
		if (stop == -ENOTSUP) {
			json_t *v = lp_json_loadb(el[i].p, el[i].n, JSON_DECODE_ANY, NULL);

			/* The scan vouched for it; a refusal would be a scan bug. */
			stop = v ? deliver(fn, ud, i, v, 0) : fn(ud, i, NULL, "invalid JSON");
			json_decref(v);
		}
		i++;
		if (stop)
			break;
	}
	free(el);
	return (long)i;
}

static long split_array(const char *p, size_t n, size_t max_items, lp_batch_item_fn fn, void *ud,
			char *err, size_t errlen)
{
	json_error_t je;
	json_t *arr = lp_json_loadb(p, n, 0, &je);
	if (!arr) {
		if (err && errlen)
			snprintf(err, errlen, "invalid JSON array at line %d column %d: %s",
				 je.line, je.column, je.text);
		return -EINVAL;
	}
	long ret;
	size_t count = json_array_size(arr);
	if (count == 0) {
		ret = empty_batch(err, errlen);
		goto out;
	}
	if (count > max_items) {
		ret = too_many(err, errlen, max_items);
		goto out;
	}
	size_t i = 0;
	while (i < count) {
		int stop = deliver(fn, ud, i, json_array_get(arr, i), 0);
		i++;
		if (stop)
			break;
	}
	ret = (long)i;
out:
	json_decref(arr);
	return ret;
}

static long split_ndjson(const char *p, size_t n, size_t max_items, lp_batch_raw_fn raw,
			 lp_batch_item_fn fn, void *ud, char *err, size_t errlen)
{
	const char *end = p + n;
	size_t count = 0;
	for (const char *line = p; line < end;) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		const char *eol = nl ? nl : end;
		if (!blank(line, (size_t)(eol - line)))
			count++;
		line = eol + 1;
	}
	if (count == 0)
		return empty_batch(err, errlen);
	if (count > max_items)
		return too_many(err, errlen, max_items);

	size_t index = 0, lineno = 0;
	for (const char *line = p; line < end;) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		const char *eol = nl ? nl : end;
		size_t len = (size_t)(eol - line);
		const char *next = eol + 1;
		lineno++;
		if (blank(line, len)) {
			line = next;
			continue;
		}
		int stop = raw ? raw(ud, index, line, len) : -ENOTSUP;
		if (stop != -ENOTSUP) {
			index++;
			if (stop)
				break;
			line = next;
			continue;
		}
		json_error_t je;
		json_t *v = lp_json_loadb(line, len, JSON_DECODE_ANY, &je);
		if (v) {
			stop = deliver(fn, ud, index, v, lineno);
			json_decref(v);
		} else {
			char msg[256];
			snprintf(msg, sizeof(msg), "line %zu: invalid JSON at column %d: %s",
				 lineno, je.column, je.text);
			stop = fn(ud, index, NULL, msg);
		}
		index++;
		if (stop)
			break;
		line = next;
	}
	return (long)index;
}

long lp_batch_split(const char *body, size_t len, size_t max_items, lp_batch_item_fn fn,
		    void *ud, char *err, size_t errlen)
{
	return lp_batch_split_raw(body, len, max_items, NULL, fn, ud, err, errlen);
}

/* True when only white space is left in [p, end). */
static bool only_ws(const char *p, const char *end)
{
	for (; p < end; p++)
		if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
			return false;
	return true;
}

long lp_batch_split_raw(const char *body, size_t len, size_t max_items, lp_batch_raw_fn raw,
			lp_batch_item_fn fn, void *ud, char *err, size_t errlen)
{
	const char *p = body ? body : "";
	const char *end = body ? body + len : p;
	if (end - p >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	size_t n = (size_t)(end - p);
	if (n == 0)
		return empty_batch(err, errlen);
	if (*p == '[') {
		long ret = raw ? split_array_raw(p, n, max_items, raw, fn, ud) : -ENOTSUP;

		return ret != -ENOTSUP ? ret : split_array(p, n, max_items, fn, ud, err, errlen);
	}
	if (raw && *p == '{' && max_items >= 1) {
		long end = lp_json_value_end(p, n);

		/* One object: a batch of one, as below.  An object with more
		 * after it is NDJSON, as jansson would find. */
		if (end > 0 && only_ws(p + end, p + n)) {
			int rc = raw(ud, 0, p, (size_t)end);

			if (rc != -ENOTSUP)
				return 1;
		} else if (end > 0) {
			return split_ndjson(p, n, max_items, raw, fn, ud, err, errlen);
		}
	}

	/* One object over several lines?  For real NDJSON this stops at the
	 * end of the first object, so it costs one line's parse. */
	json_error_t je;
	json_t *one = lp_json_loadb(p, n, 0, &je);
	if (one) {
		long ret = 1;
		if (max_items < 1)
			ret = too_many(err, errlen, max_items);
		else
			deliver(fn, ud, 0, one, 0);
		json_decref(one);
		return ret;
	}
	return split_ndjson(p, n, max_items, raw, fn, ud, err, errlen);
}
