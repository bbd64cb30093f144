/* fuzz_syslog.c - the producer's syslog receiver (producer/syslog.c): one
 * message as a datagram brings it, and the same bytes as a TCP stream.
 *
 * Checks: a refused message has a reason; an accepted one is an input
 * object with a message, a service and a canonical level, which
 * lp_event_normalize either takes (and the event passes
 * lp_event_check_normalized) or refuses with a 400/413 and a code.  As a
 * stream, cut into two reads at a point the input chooses, the framer
 * reports no frame longer than its bound, keeps no more than the bound and
 * a count's header buffered between reads, and reports the same frames as
 * when fed in one read. */
#include <errno.h>
#include <jansson.h>
#include <time.h>

#include "fuzz.h"
#include "logpipe/event.h"
#include "logpipe/log.h"
#include "../producer/syslog.h"

#include "logpipe/banned.h"

#define NOW_MS 1796598000000LL /* 2026-12-06T23:00:00Z */
#define MAX_FRAME 256

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	lp_log_init("fuzz", LP_LOG_ERROR);
	setenv("TZ", "UTC", 1);
	tzset();
	return 0;
}

static void one(const char *msg, size_t len)
{
	struct lp_event_error e;
	char why[200] = "";
	json_t *in, *ev;

	in = syslog_parse(msg, len, NOW_MS, why, sizeof(why));
	if (!in) {
		FUZZ_CHECK(why[0] != '\0', "refused without a reason");
		return;
	}
	FUZZ_CHECK(json_is_string(json_object_get(in, "message")), "no message");
	FUZZ_CHECK(json_string_length(json_object_get(in, "service")) > 0, "no service");
	FUZZ_CHECK(lp_level_canonical(json_string_value(json_object_get(in, "level"))) != NULL,
		   "no level");
	memset(&e, 0, sizeof(e));
	ev = lp_event_normalize(in, NULL, NOW_MS, NULL, &e);
	if (ev) {
		FUZZ_CHECK(lp_event_check_normalized(ev, why, sizeof(why)) == 0, "%s", why);
		json_decref(ev);
	} else {
		FUZZ_CHECK(e.status == 400 || e.status == 413, "status %d", e.status);
		FUZZ_CHECK(e.code[0] != '\0', "no code");
	}
	json_decref(in);
}

/* The frames of a stream, as one string ("!" before an error's). */
struct frames {
	char *all;
	size_t len;
};

static void collect(void *ud, const char *frame, size_t len, const char *error)
{
	struct frames *f = ud;

	FUZZ_CHECK(len <= MAX_FRAME, "a frame of %zu bytes", len);
	f->all = realloc(f->all, f->len + len + 3);
	if (!f->all)
		abort();
	f->all[f->len++] = error ? '!' : '>';
	memcpy(f->all + f->len, frame, len);
	f->len += len;
	f->all[f->len++] = '\n';
	if (!error)
		one(frame, len);
}

static struct frames stream(const char *data, size_t size, size_t cut)
{
	struct syslog_framer fr;
	struct frames f = { NULL, 0 };

	syslog_framer_init(&fr, MAX_FRAME);
	syslog_framer_feed(&fr, data, cut, collect, &f);
	FUZZ_CHECK(fr.len <= MAX_FRAME + 16, "%zu bytes buffered", fr.len);
	syslog_framer_feed(&fr, data + cut, size - cut, collect, &f);
	FUZZ_CHECK(fr.len <= MAX_FRAME + 16, "%zu bytes buffered", fr.len);
	syslog_framer_finish(&fr, collect, &f);
	syslog_framer_release(&fr);
	return f;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct frames a, b;
	size_t cut = size ? data[0] % (size + 1) : 0;

	one((const char *)data, size);
	a = stream((const char *)data, size, size);
	b = stream((const char *)data, size, cut);
	FUZZ_CHECK(a.len == b.len && (a.len == 0 || memcmp(a.all, b.all, a.len) == 0),
		   "the frames differ when cut at %zu", cut);
	free(a.all);
	free(b.all);
	return 0;
}
