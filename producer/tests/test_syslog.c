/* test_syslog.c - unit tests for the producer's syslog receiver: the
 * RFC 5424 and RFC 3164 parser (structured data and its escapes, NIL
 * values, the 3164 variants, the year of a 3164 timestamp, bad PRI,
 * truncated and invalid messages), the TCP framer (octet counting and
 * newline framing split across reads, oversized frames) and the receiver
 * itself on 127.0.0.1 with a fake sink (TCP, UDP, dead letters, the
 * connection limit and the timeouts).  Time zone: UTC (set in main). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "logpipe/event.h"
#include "logpipe/json.h"
#include "logpipe/metrics.h"
#include "logpipe/util.h"
#include "../syslog.h"

#include "logpipe/banned.h"

/* 2026-12-06T23:00:00Z */
#define NOW_MS 1796598000000LL

static const char *str(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static const char *attr(json_t *o, const char *key)
{
	return str(json_object_get(o, "attributes"), key);
}

static json_t *parse_ok(const char *msg, int64_t now_ms)
{
	char why[200] = "";
	json_t *in = syslog_parse(msg, strlen(msg), now_ms, why, sizeof(why));

	if (!in)
		fail_msg("refused \"%s\": %s", msg, why);
	return in;
}

static void parse_bad(const char *msg, size_t len, const char *why_part)
{
	char why[200] = "";
	json_t *in = syslog_parse(msg, len, NOW_MS, why, sizeof(why));

	if (in) {
		char *s = json_dumps(in, JSON_COMPACT);

		fail_msg("accepted \"%.*s\" as %s", (int)len, msg, s);
	}
	if (!strstr(why, why_part))
		fail_msg("\"%.*s\": why is \"%s\", expected it to say \"%s\"", (int)len, msg, why,
			 why_part);
}

static int64_t ms_of(const char *rfc3339)
{
	int64_t ms;

	assert_int_equal(lp_parse_rfc3339(rfc3339, &ms), 0);
	return ms;
}

static void test_5424_structured_data_and_escapes(void **state)
{
	const char *m = "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 4711 ID47 "
			"[exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"]"
			"[ex@1 esc=\"a\\\"b\\\\c\\]d\\x\" ip=\"10.0.0.1\" ip=\"10.0.0.2\" ip=\"::1\"]"
			" \xef\xbb\xbf" "An application event log entry...";
	json_t *in = parse_ok(m, NOW_MS), *sd, *ips;

	assert_string_equal(str(in, "service"), "evntslog");
	assert_string_equal(str(in, "host"), "mymachine.example.com");
	assert_string_equal(str(in, "level"), "INFO"); /* notice */
	assert_string_equal(str(in, "message"), "An application event log entry...");
	assert_int_equal(json_integer_value(json_object_get(in, "timestamp")),
			 ms_of("2003-10-11T22:14:15.003Z"));
	assert_string_equal(attr(in, "syslog.facility"), "local4");
	assert_string_equal(attr(in, "syslog.severity"), "notice");
	assert_string_equal(attr(in, "syslog.msgid"), "ID47");
	assert_string_equal(attr(in, "syslog.procid"), "4711");
	assert_string_equal(attr(in, "syslog.format"), "rfc5424");
	sd = json_object_get(json_object_get(in, "attributes"), "syslog.sd");
	assert_string_equal(str(json_object_get(sd, "exampleSDID@32473"), "eventID"), "1011");
	assert_string_equal(str(json_object_get(sd, "exampleSDID@32473"), "iut"), "3");
	/* \" \\ \] unescaped, \x kept as it is. */
	assert_string_equal(str(json_object_get(sd, "ex@1"), "esc"), "a\"b\\c]d\\x");
	ips = json_object_get(json_object_get(sd, "ex@1"), "ip");
	assert_int_equal(json_array_size(ips), 3);
	assert_string_equal(json_string_value(json_array_get(ips, 2)), "::1");
	json_decref(in);
}

static void test_5424_nil_values_and_normalize(void **state)
{
	json_t *in = parse_ok("<34>1 - - - - - - su failed", NOW_MS), *ev;
	struct lp_event_error e;

	assert_string_equal(str(in, "service"), "syslog");
	assert_null(json_object_get(in, "host"));
	assert_null(json_object_get(in, "timestamp"));
	assert_null(attr(in, "syslog.msgid"));
	assert_null(json_object_get(json_object_get(in, "attributes"), "syslog.sd"));
	assert_string_equal(str(in, "level"), "FATAL"); /* auth.crit */
	assert_string_equal(attr(in, "syslog.facility"), "auth");
	assert_string_equal(str(in, "message"), "su failed");
	ev = lp_event_normalize(in, NULL, NOW_MS, NULL, &e);
	assert_non_null(ev);
	assert_string_equal(str(ev, "level"), "FATAL");
	assert_string_equal(str(ev, "service"), "syslog");
	assert_string_equal(attr(ev, "syslog.severity"), "crit");
	json_decref(ev);
	json_decref(in);

	/* Severities to levels: 3 err, 4 warning, 7 debug; offsets parsed. */
	in = parse_ok("<11>1 2024-01-15T10:00:00.123456+02:00 h a - - - x", NOW_MS);
	assert_string_equal(str(in, "level"), "ERROR");
	assert_int_equal(json_integer_value(json_object_get(in, "timestamp")),
			 ms_of("2024-01-15T08:00:00.123Z"));
	json_decref(in);
	in = parse_ok("<12>1 - h a - - -", NOW_MS);
	assert_string_equal(str(in, "level"), "WARN");
	assert_string_equal(str(in, "message"), "");
	json_decref(in);
	in = parse_ok("<191>1 - h a - - - x", NOW_MS);
	assert_string_equal(str(in, "level"), "DEBUG");
	assert_string_equal(attr(in, "syslog.facility"), "local7");
	json_decref(in);
}

static void test_3164_variants(void **state)
{
	json_t *in;

	in = parse_ok("<34>Oct 11 22:14:08 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
		      NOW_MS);
	assert_string_equal(str(in, "host"), "mymachine");
	assert_string_equal(str(in, "service"), "su");
	assert_string_equal(str(in, "level"), "FATAL");
	assert_string_equal(str(in, "message"), "'su root' failed for lonvick on /dev/pts/8");
	assert_int_equal(json_integer_value(json_object_get(in, "timestamp")),
			 ms_of("2026-10-11T22:14:08Z"));
	assert_string_equal(attr(in, "syslog.format"), "rfc3164");
	json_decref(in);

	/* logger --rfc3164: a one-digit day padded with a space. */
	in = parse_ok("<132>Dec  6 23:11:13 vm myapp[321]: hello world", NOW_MS);
	assert_string_equal(str(in, "host"), "vm");
	assert_string_equal(str(in, "service"), "myapp");
	assert_string_equal(attr(in, "syslog.procid"), "321");
	assert_string_equal(attr(in, "syslog.facility"), "local0");
	assert_string_equal(str(in, "level"), "WARN");
	assert_string_equal(str(in, "message"), "hello world");
	assert_int_equal(json_integer_value(json_object_get(in, "timestamp")),
			 ms_of("2026-12-06T23:11:13Z"));
	json_decref(in);

	/* No host name (the local form): the word after the time is the tag. */
	in = parse_ok("<13>Dec 6 23:11:13 cron[7]: job done", NOW_MS);
	assert_null(json_object_get(in, "host"));
	assert_string_equal(str(in, "service"), "cron");
	assert_string_equal(str(in, "message"), "job done");
	json_decref(in);

	/* No tag: all of it is the message. */
	in = parse_ok("<13>Dec 16 01:02:03 host just some text", NOW_MS);
	assert_string_equal(str(in, "host"), "host");
	assert_string_equal(str(in, "service"), "syslog");
	assert_string_equal(str(in, "message"), "just some text");
	json_decref(in);

	/* No timestamp, no host. */
	in = parse_ok("<13>app: hi", NOW_MS);
	assert_null(json_object_get(in, "timestamp"));
	assert_null(json_object_get(in, "host"));
	assert_string_equal(str(in, "service"), "app");
	assert_string_equal(str(in, "message"), "hi");
	json_decref(in);
	in = parse_ok("<13>hello world", NOW_MS);
	assert_string_equal(str(in, "service"), "syslog");
	assert_string_equal(str(in, "message"), "hello world");
	json_decref(in);

	/* rsyslog's high-precision variant. */
	in = parse_ok("<13>2024-01-15T10:00:00.5Z web1 nginx: GET /", NOW_MS);
	assert_int_equal(json_integer_value(json_object_get(in, "timestamp")),
			 ms_of("2024-01-15T10:00:00.500Z"));
	assert_string_equal(str(in, "host"), "web1");
	assert_string_equal(str(in, "service"), "nginx");
	json_decref(in);

	/* Not UTF-8 (latin-1) and a NUL: U+FFFD each. */
	in = parse_ok("<13>app: caf\xe9 \x01", NOW_MS);
	assert_string_equal(str(in, "message"), "caf\xef\xbf\xbd \x01");
	json_decref(in);
	{
		char why[200];
		static const char m[] = "<13>app: a\0b";

		in = syslog_parse(m, sizeof(m) - 1, NOW_MS, why, sizeof(why));
		assert_non_null(in);
		assert_string_equal(str(in, "message"), "a\xef\xbf\xbd" "b");
		json_decref(in);
	}
}

static void test_3164_year_boundary(void **state)
{
	json_t *in;

	/* A December message received on 1 January is last year's. */
	in = parse_ok("<13>Dec 31 23:59:59 h a: x", ms_of("2027-01-01T00:00:02Z"));
	assert_int_equal(json_integer_value(json_object_get(in, "timestamp")),
			 ms_of("2026-12-31T23:59:59Z"));
	json_decref(in);
	/* A January message received on 31 December (a fast clock) is next year's. */
	in = parse_ok("<13>Jan  1 00:00:01 h a: x", ms_of("2026-12-31T23:59:58Z"));
	assert_int_equal(json_integer_value(json_object_get(in, "timestamp")),
			 ms_of("2027-01-01T00:00:01Z"));
	json_decref(in);
	/* Otherwise the current year. */
	in = parse_ok("<13>Jun  1 00:00:01 h a: x", ms_of("2026-12-31T23:59:58Z"));
	assert_int_equal(json_integer_value(json_object_get(in, "timestamp")),
			 ms_of("2026-06-01T00:00:01Z"));
	json_decref(in);
	/* Not a time: the text is the message. */
	in = parse_ok("<13>Dec 32 23:59:59 h a: x", NOW_MS);
	assert_null(json_object_get(in, "timestamp"));
	assert_string_equal(str(in, "message"), "Dec 32 23:59:59 h a: x");
	json_decref(in);
}

static void test_bad_pri(void **state)
{
	parse_bad("", 0, "no PRI");
	parse_bad("hello", 5, "no PRI");
	parse_bad("13>hi", 5, "no PRI");
	parse_bad("<>hi", 4, "invalid PRI");
	parse_bad("<192>hi", 7, "invalid PRI");
	parse_bad("<013>hi", 7, "invalid PRI");
	parse_bad("<1a>hi", 6, "invalid PRI");
	parse_bad("<1234>hi", 8, "invalid PRI");
	parse_bad("<13", 3, "invalid PRI");
	parse_bad("<", 1, "invalid PRI");
}

static void test_5424_truncated_and_invalid(void **state)
{
	parse_bad("<13>1 ", 6, "TIMESTAMP is empty");
	parse_bad("<13>1 2003-10-11T22:14:15Z", 26, "ends inside the header, at TIMESTAMP");
	parse_bad("<13>1 2003-10-11T22:14:15Z host app", 35, "at APP-NAME");
	parse_bad("<13>1 - host app - -", 20, "at MSGID");
	parse_bad("<13>1 - host app - - ", 21, "structured data");
	parse_bad("<13>1 - host app - - [id a=\"b", 29, "not closed");
	parse_bad("<13>1 - host app - - [id a=\"b\"", 30, "not closed by \"]\"");
	parse_bad("<13>1 - host app - - [id a=b]", 29, "not followed by =\"");
	parse_bad("<13>1 - host app - - [] x", 25, "invalid SD-ID");
	parse_bad("<13>1 - host app - - [id]x", 26, "not followed by a space");
	parse_bad("<13>1 yesterday host app - - - x", 32, "invalid TIMESTAMP");
	parse_bad("<13>1 - host\xff app - - - x", 25, "HOSTNAME holds a byte");
	parse_bad("<13>1 - host aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa - - - x", 69,
		  "APP-NAME is too long");
	parse_bad("<13>2 - host app - - - x", 24, "unsupported syslog VERSION 2");
}

/* ---- framing ---------------------------------------------------------------- */

struct frames {
	char got[32][128]; /* frames, "!" prefixed when reported as errors */
	size_t n;
};

static void collect(void *ud, const char *frame, size_t len, const char *error)
{
	struct frames *f = ud;

	assert_true(f->n < 32);
	snprintf(f->got[f->n++], sizeof(f->got[0]), "%s%.*s", error ? "!" : "", (int)len, frame);
}

/* Feeds s cut at every position into two reads, and byte by byte: the
 * frames are the same each time. */
static void frames_of(const char *s, size_t max, const char *const *want, size_t nwant)
{
	size_t len = strlen(s), cut, i;

	for (cut = 0; cut <= len + 1; cut++) {
		struct syslog_framer fr;
		struct frames f = { .n = 0 };

		syslog_framer_init(&fr, max);
		if (cut <= len) {
			syslog_framer_feed(&fr, s, cut, collect, &f);
			syslog_framer_feed(&fr, s + cut, len - cut, collect, &f);
		} else {
			for (i = 0; i < len; i++)
				syslog_framer_feed(&fr, s + i, 1, collect, &f);
		}
		syslog_framer_finish(&fr, collect, &f);
		if (f.n != nwant)
			fail_msg("cut %zu: %zu frames, expected %zu (first \"%s\")", cut, f.n, nwant,
				 f.n ? f.got[0] : "");
		for (i = 0; i < nwant; i++)
			if (strcmp(f.got[i], want[i]) != 0)
				fail_msg("cut %zu: frame %zu is \"%s\", expected \"%s\"", cut, i,
					 f.got[i], want[i]);
		assert_false(syslog_framer_partial(&fr));
		syslog_framer_release(&fr);
	}
}

static void test_framing_split_across_reads(void **state)
{
	static const char *const octets[] = { "<13>1 - h a - - - x y", "<13>hi\nthere", "<14>z" };
	static const char *const lines[] = { "<13>a", "<13>b", "<13>c d", "<13>last" };
	static const char *const mixed[] = { "<13>a", "<13>bb", "<13>c" };

	frames_of("21 <13>1 - h a - - - x y12 <13>hi\nthere5 <14>z", 64, octets, 3);
	frames_of("<13>a\n<13>b\r\n\n<13>c d\n<13>last", 64, lines, 4);
	frames_of("<13>a\n6 <13>bb<13>c\n", 64, mixed, 3);
}

static void test_framing_oversized(void **state)
{
	static const char *const octet[] = { "!<13>123456", "<13>ok" };
	static const char *const line[] = { "!<13>123456", "<13>ok" };
	static const char *const cut[] = { "<13>ok", "!<13>pa" };
	static const char *const badcount[] = { "012 <13>x", "99999999999 <13>y" };

	/* 20 bytes announced, max 10: the first 10 reported, the rest skipped. */
	frames_of("20 <13>1234567890123456\n6 <13>ok", 10, octet, 2);
	frames_of("<13>1234567890123456\n<13>ok\n", 10, line, 2);
	/* The stream ends inside an octet-counted frame. */
	frames_of("6 <13>ok9 <13>pa", 64, cut, 2);
	/* Not a count (leading zero, too many digits): a line. */
	frames_of("012 <13>x\n99999999999 <13>y\n", 64, badcount, 2);
}

static void test_framing_bounded_buffer(void **state)
{
	struct syslog_framer fr;
	struct frames f = { .n = 0 };
	char chunk[1000];
	int i;

	/* An endless line and an endless octet-counted frame: never more than
	 * max (plus one read) buffered, one error each. */
	memset(chunk, 'a', sizeof(chunk));
	syslog_framer_init(&fr, 2048);
	for (i = 0; i < 1000; i++) {
		syslog_framer_feed(&fr, chunk, sizeof(chunk), collect, &f);
		assert_true(fr.len <= 2048 + sizeof(chunk));
	}
	syslog_framer_feed(&fr, "\n999999999 ", 11, collect, &f);
	for (i = 0; i < 1000; i++) {
		syslog_framer_feed(&fr, chunk, sizeof(chunk), collect, &f);
		assert_true(fr.len <= 2048 + sizeof(chunk));
	}
	assert_int_equal(f.n, 2);
	assert_true(f.got[0][0] == '!' && f.got[1][0] == '!');
	syslog_framer_release(&fr);
}

/* ---- the receiver ------------------------------------------------------------- */

struct sink {
	pthread_mutex_t mu;
	json_t *events;   /* array of what deliver got */
	json_t *dead;     /* array of [raw, reason] */
};

static size_t sink_deliver(void *ud, const struct syslog_event *events, size_t n)
{
	struct sink *s = ud;

	pthread_mutex_lock(&s->mu);
	for (size_t i = 0; i < n; i++) {
		json_t *ev = lp_json_loadb(events[i].text, events[i].len, 0, NULL);
		const char *svc = json_string_value(json_object_get(ev, "service"));

		/* The key is the service; the id the event's. */
		assert_non_null(svc);
		assert_int_equal(events[i].keylen, strlen(svc));
		assert_memory_equal(events[i].key, svc, events[i].keylen);
		assert_string_equal(events[i].id, json_string_value(json_object_get(ev, "id")));
		json_array_append_new(s->events, ev);
	}
	pthread_mutex_unlock(&s->mu);
	return n;
}

static void sink_dead(void *ud, const char *raw, size_t len, const char *reason)
{
	struct sink *s = ud;

	pthread_mutex_lock(&s->mu);
	json_array_append_new(s->dead, json_pack("[s%,s]", raw, len, reason));
	pthread_mutex_unlock(&s->mu);
}

static size_t count_of(struct sink *s, json_t *a)
{
	size_t n;

	pthread_mutex_lock(&s->mu);
	n = json_array_size(a);
	pthread_mutex_unlock(&s->mu);
	return n;
}

/* Waits (bounded) until a holds want items. */
static void wait_count(struct sink *s, json_t *a, size_t want)
{
	int64_t end = lp_now_ms() + 10000;

	while (count_of(s, a) < want && lp_now_ms() < end)
		lp_sleep_ms(5, NULL);
	assert_int_equal(count_of(s, a), want);
}

static int connect_to(int port, int type)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, type, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void send_all(int fd, const char *s)
{
	assert_int_equal(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

/* Whether the peer closed fd (bounded wait). */
static bool closed_by_peer(int fd)
{
	struct timeval tv = { 5, 0 };
	char c;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return recv(fd, &c, 1, 0) == 0;
}

static void test_receiver(void **state)
{
	struct sink s = { .events = json_array(), .dead = json_array() };
	struct lp_registry *reg = lp_registry_new();
	struct syslog_opts o = {
		.listen = "127.0.0.1:0",
		.udp = true,
		.max_message = 1024,
		.max_conns = 2,
		.idle_timeout_ms = 60000,
		.message_timeout_ms = 1000,
		.metrics = reg,
		.sink = { .ud = &s, .deliver = sink_deliver, .dead_letter = sink_dead },
	};
	char err[200] = "", big[2100];
	struct syslog_rx *rx;
	int a, b, c, u;

	pthread_mutex_init(&s.mu, NULL);
	rx = syslog_rx_start(&o, err, sizeof(err));
	if (!rx)
		fail_msg("%s", err);
	a = connect_to(syslog_rx_port(rx), SOCK_STREAM);
	send_all(a, "<13>1 - h app1 - - - one\n24 <13>1 - h app1 - - - t");
	send_all(a, "wo<14>oops, no count\nnot syslog\n");
	wait_count(&s, s.events, 3);
	wait_count(&s, s.dead, 1);
	assert_string_equal(str(json_array_get(s.events, 1), "message"), "two");
	assert_string_equal(str(json_array_get(s.events, 0), "source_ip"), "127.0.0.1");
	/* Normalised: an id and a level. */
	assert_true(lp_uuid_valid(str(json_array_get(s.events, 0), "id")));
	assert_string_equal(json_string_value(json_array_get(json_array_get(s.dead, 0), 0)),
			    "not syslog");

	/* UDP: one datagram, one message; a trailing LF dropped. */
	u = connect_to(syslog_rx_port(rx), SOCK_DGRAM);
	send_all(u, "<13>Dec  6 23:11:13 vm udpapp: over udp\n");
	wait_count(&s, s.events, 4);
	assert_string_equal(str(json_array_get(s.events, 3), "service"), "udpapp");
	assert_string_equal(str(json_array_get(s.events, 3), "message"), "over udp");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	send_all(u, big);
	wait_count(&s, s.dead, 2);
	assert_non_null(strstr(json_string_value(json_array_get(json_array_get(s.dead, 1), 1)),
			       "larger than"));

	/* max_conns 2: a third connection is closed at once. */
	b = connect_to(syslog_rx_port(rx), SOCK_STREAM);
	c = connect_to(syslog_rx_port(rx), SOCK_STREAM);
	assert_true(closed_by_peer(c));
	close(c);
	/* A message begun and not finished: cut off, the part dead-lettered. */
	send_all(b, "<13>slow");
	assert_true(closed_by_peer(b));
	wait_count(&s, s.dead, 3);
	assert_non_null(strstr(json_string_value(json_array_get(json_array_get(s.dead, 2), 1)),
			       "timed out"));
	/* The first connection still works: escapes, non-ASCII, control
	 * characters (which the scanner may leave to the tree path); its last
	 * line without LF at close. */
	send_all(a, "<13>1 - h app1 - - [x@1 q=\"a\\\"b\"] caf\xc3\xa9 \"q\" \\ \t\x01\n");
	send_all(a, "<13>1 - h app1 - - - bye");
	close(a);
	wait_count(&s, s.events, 6);
	assert_string_equal(str(json_array_get(s.events, 4), "message"),
			    "caf\xc3\xa9 \"q\" \\ \t\x01");
	assert_string_equal(str(json_object_get(json_object_get(json_object_get(
				    json_array_get(s.events, 4), "attributes"), "syslog.sd"), "x@1"),
				"q"),
			    "a\"b");
	assert_string_equal(str(json_array_get(s.events, 5), "message"), "bye");
	close(b);
	close(u);
	syslog_rx_stop(rx);
	json_decref(s.events);
	json_decref(s.dead);
	pthread_mutex_destroy(&s.mu);
	lp_registry_free(reg);
}

/* A sender whose every write ends inside a message is never inside one
 * message for long: message_timeout_ms does not cut a steady stream. */
static void test_receiver_steady_stream_not_cut(void **state)
{
	struct sink s = { .events = json_array(), .dead = json_array() };
	struct syslog_opts o = {
		.listen = "127.0.0.1:0",
		.max_message = 1024,
		.max_conns = 2,
		.idle_timeout_ms = 60000,
		.message_timeout_ms = 1000,
		.sink = { .ud = &s, .deliver = sink_deliver, .dead_letter = sink_dead },
	};
	char err[200] = "", buf[32];
	struct syslog_rx *rx;
	int fd, i;

	pthread_mutex_init(&s.mu, NULL);
	o.metrics = lp_registry_new();
	rx = syslog_rx_start(&o, err, sizeof(err));
	if (!rx)
		fail_msg("%s", err);
	fd = connect_to(syslog_rx_port(rx), SOCK_STREAM);
	send_all(fd, "<13>m0");
	/* 2 s of messages, each write ending inside the next one. */
	for (i = 1; i <= 40; i++) {
		lp_sleep_ms(50, NULL);
		snprintf(buf, sizeof(buf), "\n<13>m%d", i);
		send_all(fd, buf);
	}
	send_all(fd, "\n");
	wait_count(&s, s.events, 41);
	assert_int_equal(count_of(&s, s.dead), 0);
	close(fd);
	syslog_rx_stop(rx);
	json_decref(s.events);
	json_decref(s.dead);
	pthread_mutex_destroy(&s.mu);
	lp_registry_free(o.metrics);
}

static void test_bad_listen(void **state)
{
	struct syslog_opts o = { .listen = "256.0.0.1:0", .max_message = 1024, .max_conns = 1,
				 .idle_timeout_ms = 1000, .message_timeout_ms = 1000 };
	char err[200] = "";

	o.metrics = lp_registry_new();
	assert_null(syslog_rx_start(&o, err, sizeof(err)));
	assert_non_null(strstr(err, "syslog"));
	lp_registry_free(o.metrics);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_5424_structured_data_and_escapes),
		cmocka_unit_test(test_5424_nil_values_and_normalize),
		cmocka_unit_test(test_3164_variants),
		cmocka_unit_test(test_3164_year_boundary),
		cmocka_unit_test(test_bad_pri),
		cmocka_unit_test(test_5424_truncated_and_invalid),
		cmocka_unit_test(test_framing_split_across_reads),
		cmocka_unit_test(test_framing_oversized),
		cmocka_unit_test(test_framing_bounded_buffer),
		cmocka_unit_test(test_receiver),
		cmocka_unit_test(test_receiver_steady_stream_not_cut),
		cmocka_unit_test(test_bad_listen),
	};

	setenv("TZ", "UTC", 1);
	tzset();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
