/* json.c - parsing JSON from outside the process without deep recursion.
 *
 * The depth check is one pass over the text that counts unclosed '[' and
 * '{' outside strings.  It errs on the safe side: for text jansson can
 * parse up to some point, the depth jansson reaches there is never more
 * than the count here (strings are recognised the same way, and a bracket
 * jansson would refuse only makes the count higher), so a text this
 * passes cannot make jansson recurse deeper than LP_JSON_MAX_DEPTH. */
#include <stdio.h>
#include <string.h>

#include "logpipe/json.h"

#include "logpipe/banned.h"
/* The one caller of jansson's parser: after the depth check. */
#undef json_loadb

bool lp_json_too_deep(const char *b, size_t n, int max, size_t *where)
{
	bool in_string = false;
	int depth = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		char c = b[i];

		if (in_string) {
			/* Most of a body is inside strings: run to the next quote
			 * or backslash in a tight loop. */
			while (i < n && b[i] != '"' && b[i] != '\\')
				i++;
			if (i >= n)
				break;
			if (b[i] == '\\')
				i++;
			else
				in_string = false;
		} else if (c == '"') {
			in_string = true;
		} else if (c == '[' || c == '{') {
			if (++depth > max) {
				if (where)
					*where = i;
				return true;
			}
		} else if ((c == ']' || c == '}') && depth > 0) {
			depth--;
		}
	}
	return false;
}

/* Fills err like jansson does for its own depth limit, at offset pos. */
static void too_deep_error(json_error_t *err, const char *b, size_t pos)
{
	size_t i, line = 1, col_from = 0;

	if (!err)
		return;
	for (i = 0; i < pos; i++) {
		if (b[i] == '\n') {
			line++;
			col_from = i + 1;
		}
	}
	memset(err, 0, sizeof(*err));
	err->line = (int)line;
	err->column = (int)(pos - col_from + 1);
	err->position = (int)pos + 1;
	snprintf(err->source, sizeof(err->source), "<buffer>");
	snprintf(err->text, sizeof(err->text) - 1, "maximum parsing depth reached (%d levels)",
		 LP_JSON_MAX_DEPTH);
	err->text[JSON_ERROR_TEXT_LENGTH - 1] = (char)json_error_stack_overflow;
}

json_t *lp_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *err)
{
	size_t where = 0;

	if (buf && lp_json_too_deep(buf, len, LP_JSON_MAX_DEPTH, &where)) {
		too_deep_error(err, buf, where);
		return NULL;
	}
	return json_loadb(buf, len, flags, err);
}

json_t *lp_json_loads(const char *s, size_t flags, json_error_t *err)
{
	return lp_json_loadb(s, s ? strlen(s) : 0, flags, err);
}
