/* syslog.c - the producer's syslog receiver (see syslog.h, docs/syslog.md).
 *
 * Parsing is strict where the RFCs are: a message must open with a valid
 * PRI ("<0>" to "<191>", no leading zeros); "<PRI>1 " starts RFC 5424,
 * whose header fields, structured data and timestamp must then be well
 * formed, anything else is read as RFC 3164, whose parts are all optional
 * and found by shape (a "Mmm dd hh:mm:ss" or RFC 3339 timestamp, then a
 * host name unless the next word is already the "TAG[PID]:").  What does
 * not parse is dead-lettered with the reason, never guessed at.
 *
 * The receiver is one thread and poll(): the TCP listener, each
 * connection, the UDP socket and an eventfd that stop pokes.  A round
 * reads what is ready (a bounded number of messages) into a batch, which a
 * second thread, the deliverer, hands to the sink (Kafka or the spool)
 * while the receiver reads the next; it hands over when the deliverer is
 * idle, or waits for it once the batch is full.  While both wait for
 * Kafka the senders wait in the kernel's socket buffers (TCP pushes back,
 * UDP drops when its buffer is full).  Connections are bounded in number, in the
 * size of one message and in time: silent for idle_timeout_ms, or inside
 * one message for message_timeout_ms, a connection is closed. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "logpipe/log.h"
#include "logpipe/util.h"
#include "syslog.h"

#include "logpipe/banned.h"

/* Messages read in one poll round at most: one batch for the sink. */
#define ROUND_MAX_MSGS 8192
/* One read() of a connection. */
#define READ_BYTES (256u << 10)
/* Longest header fields (RFC 5424 section 6). */
#define MAX_HOSTNAME 255
#define MAX_APPNAME 48
#define MAX_PROCID 128
#define MAX_MSGID 32
#define MAX_SDNAME 32

/* ---- parsing ---------------------------------------------------------------- */

static const char *const facilities[24] = {
	"kern",   "user",   "mail",   "daemon", "auth",   "syslog", "lpr",    "news",
	"uucp",   "cron",   "authpriv", "ftp",  "ntp",    "security", "console", "solaris-cron",
	"local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
};
static const char *const severities[8] = { "emerg",   "alert",  "crit", "err",
					   "warning", "notice", "info", "debug" };
/* Severity -> the event's level: emerg, alert and crit are FATAL, notice INFO. */
static const char *const sev_levels[8] = { "FATAL", "FATAL", "FATAL", "ERROR",
					   "WARN",  "INFO",  "INFO",  "DEBUG" };

static bool printusascii(unsigned char c)
{
	return c >= 33 && c <= 126;
}

static int bad(char *why, size_t whylen, const char *fmt, const char *what)
{
	snprintf(why, whylen, fmt, what);
	return -EINVAL;
}

/*
 * A JSON string of s[0..n): valid UTF-8 is taken as it is; a byte that
 * does not start a valid sequence, and NUL (which PostgreSQL's text does
 * not take), become U+FFFD.  Senders of RFC 3164 use any 8-bit charset.
 */
static json_t *text_value(const char *s, size_t n)
{
	char *buf, *o;
	json_t *v;
	size_t i = 0;

	if (lp_utf8_valid((const unsigned char *)s, n) && !memchr(s, '\0', n))
		return json_stringn(s, n);
	o = buf = lp_xmalloc(n * 3 + 1);
	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		size_t k = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;

		if (c != 0 && k > 0 && i + k <= n && lp_utf8_valid((const unsigned char *)s + i, k)) {
			memcpy(o, s + i, k);
			o += k;
			i += k;
		} else {
			memcpy(o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
		}
	}
	v = json_stringn(buf, (size_t)(o - buf));
	free(buf);
	return v;
}

/* "<PRI>": sets *pri, returns the bytes it takes, or -EINVAL. */
static int parse_pri(const char *s, size_t n, int *pri, char *why, size_t whylen)
{
	size_t i = 1;
	int v = 0;

	if (n == 0 || s[0] != '<')
		return bad(why, whylen, "%s", "no PRI: a syslog message starts with \"<PRI>\"");
	while (i < n && i <= 4 && s[i] >= '0' && s[i] <= '9')
		v = v * 10 + (s[i++] - '0');
	if (i == 1 || i > 4 || i >= n || s[i] != '>' || (s[1] == '0' && i > 2) || v > 191)
		return bad(why, whylen, "%s", "invalid PRI: expected \"<0>\" to \"<191>\"");
	*pri = v;
	return (int)i + 1;
}

/* The next SP-terminated field of an RFC 5424 header at *p: printable
 * ASCII, 1 to max bytes, followed by SP.  "-" (NILVALUE) sets *len 0. */
static int field(const char **p, const char *end, size_t max, const char *name, const char **f,
		 size_t *len, char *why, size_t whylen)
{
	const char *s = *p;

	while (s < end && *s != ' ') {
		if (!printusascii((unsigned char)*s))
			return bad(why, whylen, "RFC 5424: %s holds a byte that is not printable ASCII",
				   name);
		s++;
	}
	if (s == *p)
		return bad(why, whylen, "RFC 5424: %s is empty", name);
	if (s == end)
		return bad(why, whylen, "RFC 5424: the message ends inside the header, at %s", name);
	if ((size_t)(s - *p) > max)
		return bad(why, whylen, "RFC 5424: %s is too long", name);
	*f = *p;
	*len = (s - *p == 1 && **p == '-') ? 0 : (size_t)(s - *p);
	*p = s + 1;
	return 0;
}

/* Adds name=value to an SD element's object: a repeated name makes an array. */
static void sd_param(json_t *el, const char *name, json_t *value)
{
	json_t *old = json_object_get(el, name);

	if (!old) {
		json_object_set_new(el, name, value);
	} else if (json_is_array(old)) {
		json_array_append_new(old, value);
	} else {
		json_t *a = json_array();

		json_array_append(a, old);
		json_array_append_new(a, value);
		json_object_set_new(el, name, a);
	}
}

/* An SD-NAME at *p (1 to 32 printable ASCII but '=', SP, ']', '"'), into out. */
static int sd_name(const char **p, const char *end, char out[MAX_SDNAME + 1], const char *what,
		   char *why, size_t whylen)
{
	const char *s = *p;

	while (s < end && printusascii((unsigned char)*s) && *s != '=' && *s != ']' && *s != '"')
		s++;
	if (s == *p || s - *p > MAX_SDNAME)
		return bad(why, whylen, "RFC 5424: invalid %s in the structured data", what);
	memcpy(out, *p, (size_t)(s - *p));
	out[s - *p] = '\0';
	*p = s;
	return 0;
}

/* STRUCTURED-DATA at *p, "-" or SD-ELEMENTs, into sd (SD-ID -> {name: value}). */
static int parse_sd(const char **p, const char *end, json_t *sd, char *why, size_t whylen)
{
	const char *s = *p;
	char id[MAX_SDNAME + 1], name[MAX_SDNAME + 1];

	if (s < end && *s == '-') {
		*p = s + 1;
		return 0;
	}
	if (s == end || *s != '[')
		return bad(why, whylen, "%s", "RFC 5424: expected \"-\" or \"[\" for the structured data");
	while (s < end && *s == '[') {
		json_t *el;

		s++;
		if (sd_name(&s, end, id, "SD-ID", why, whylen) < 0)
			return -EINVAL;
		el = json_object_get(sd, id);
		if (!el) {
			el = json_object();
			json_object_set_new(sd, id, el);
		}
		while (s < end && *s == ' ') {
			char *val;
			size_t n = 0;

			s++;
			if (sd_name(&s, end, name, "PARAM-NAME", why, whylen) < 0)
				return -EINVAL;
			if (end - s < 2 || s[0] != '=' || s[1] != '"')
				return bad(why, whylen, "RFC 5424: PARAM-NAME \"%s\" is not followed by =\"",
					   name);
			s += 2;
			val = lp_xmalloc((size_t)(end - s) + 1);
			/* \" \\ \] are escapes; a backslash before anything else is itself. */
			while (s < end && *s != '"') {
				if (*s == '\\' && s + 1 < end && (s[1] == '"' || s[1] == '\\' || s[1] == ']'))
					s++;
				val[n++] = *s++;
			}
			if (s == end) {
				free(val);
				return bad(why, whylen, "RFC 5424: the value of \"%s\" is not closed", name);
			}
			s++;
			sd_param(el, name, text_value(val, n));
			free(val);
		}
		if (s == end || *s != ']')
			return bad(why, whylen, "RFC 5424: SD-ELEMENT \"%s\" is not closed by \"]\"", id);
		s++;
	}
	*p = s;
	return 0;
}

/* MSG: a UTF-8 BOM (RFC 5424's marker) is dropped. */
static json_t *msg_value(const char *s, size_t n)
{
	if (n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) {
		s += 3;
		n -= 3;
	}
	return text_value(s, n);
}

static void set_str(json_t *o, const char *key, const char *s, size_t n)
{
	if (n > 0)
		json_object_set_new(o, key, json_stringn(s, n));
}

static int parse_5424(const char *s, const char *end, json_t *in, json_t *attrs, char *why,
		      size_t whylen)
{
	const char *ts, *host, *app, *proc, *msgid;
	size_t tsl, hostl, appl, procl, msgidl;
	json_t *sd = json_object();
	char buf[64];
	int64_t ms;
	int rc = -EINVAL;

	if (field(&s, end, 63, "TIMESTAMP", &ts, &tsl, why, whylen) < 0 ||
	    field(&s, end, MAX_HOSTNAME, "HOSTNAME", &host, &hostl, why, whylen) < 0 ||
	    field(&s, end, MAX_APPNAME, "APP-NAME", &app, &appl, why, whylen) < 0 ||
	    field(&s, end, MAX_PROCID, "PROCID", &proc, &procl, why, whylen) < 0 ||
	    field(&s, end, MAX_MSGID, "MSGID", &msgid, &msgidl, why, whylen) < 0)
		goto out;
	if (tsl > 0) {
		memcpy(buf, ts, tsl);
		buf[tsl] = '\0';
		if (lp_parse_rfc3339(buf, &ms) < 0) {
			bad(why, whylen, "RFC 5424: invalid TIMESTAMP \"%s\"", buf);
			goto out;
		}
		json_object_set_new(in, "timestamp", json_integer(ms));
	}
	if (parse_sd(&s, end, sd, why, whylen) < 0)
		goto out;
	if (s < end && *s != ' ') {
		bad(why, whylen, "%s", "RFC 5424: the structured data is not followed by a space");
		goto out;
	}
	if (s < end)
		s++;
	set_str(in, "host", host, hostl);
	set_str(in, "service", app, appl);
	set_str(attrs, "syslog.procid", proc, procl);
	set_str(attrs, "syslog.msgid", msgid, msgidl);
	if (json_object_size(sd) > 0)
		json_object_set(attrs, "syslog.sd", sd);
	json_object_set_new(attrs, "syslog.format", json_string("rfc5424"));
	json_object_set_new(in, "message", msg_value(s, (size_t)(end - s)));
	rc = 0;
out:
	json_decref(sd);
	return rc;
}

/* "Mmm dd hh:mm:ss" (day also " d" or "d") at s; sets *ms and returns the
 * bytes taken, or 0.  The year is inferred from now_ms (syslog.h). */
static size_t bsd_time(const char *s, const char *end, int64_t now_ms, int64_t *ms)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	const char *p = s + 4;
	struct tm now, tm = { 0 };
	time_t t = (time_t)(now_ms / 1000);
	int mon, day, hh, mi, ss;

	if (end - s < 14 || s[3] != ' ')
		return 0;
	for (mon = 0; mon < 12; mon++)
		if (memcmp(s, months + 3 * mon, 3) == 0)
			break;
	if (mon == 12)
		return 0;
	if (*p == ' ')
		p++;
	if (end - p >= 2 && p[1] != ' ') {
		day = lp_parse_decimal(p, 2, 1, 31);
		p += 2;
	} else {
		day = lp_parse_decimal(p, 1, 1, 9);
		p += 1;
	}
	if (day < 0 || end - p < 9 || p[0] != ' ' || p[3] != ':' || p[6] != ':')
		return 0;
	hh = lp_parse_decimal(p + 1, 2, 0, 23);
	mi = lp_parse_decimal(p + 4, 2, 0, 59);
	ss = lp_parse_decimal(p + 7, 2, 0, 60);
	if (hh < 0 || mi < 0 || ss < 0)
		return 0;
	localtime_r(&t, &now);
	tm.tm_year = now.tm_year;
	if (mon == 11 && now.tm_mon == 0)
		tm.tm_year--;
	else if (mon == 0 && now.tm_mon == 11)
		tm.tm_year++;
	tm.tm_mon = mon;
	tm.tm_mday = day;
	tm.tm_hour = hh;
	tm.tm_min = mi;
	tm.tm_sec = ss;
	tm.tm_isdst = -1;
	t = mktime(&tm);
	if (t == (time_t)-1)
		return 0;
	*ms = (int64_t)t * 1000;
	return (size_t)(p + 9 - s);
}

/* An RFC 3339 timestamp word at s (rsyslog's high-precision RFC 3164). */
static size_t iso_time(const char *s, const char *end, int64_t *ms)
{
	const char *e = s;
	char buf[64];

	while (e < end && *e != ' ' && e - s < 63)
		e++;
	if (e - s < 19 || s[4] != '-' || (e < end && *e != ' '))
		return 0;
	memcpy(buf, s, (size_t)(e - s));
	buf[e - s] = '\0';
	return lp_parse_rfc3339(buf, ms) == 0 ? (size_t)(e - s) : 0;
}

/*
 * "TAG[PID]: " or "TAG: " at s: sets the tag and pid and returns the bytes
 * it takes (with the SP after the colon), or 0 when s does not start with
 * one (then all of it is the message).
 */
static size_t bsd_tag(const char *s, const char *end, const char **tag, size_t *tagl,
		      const char **pid, size_t *pidl)
{
	const char *p = s;

	while (p < end && printusascii((unsigned char)*p) && *p != ':' && *p != '[')
		p++;
	if (p == s || p == end || p - s > MAX_APPNAME)
		return 0;
	*tag = s;
	*tagl = (size_t)(p - s);
	*pid = NULL;
	*pidl = 0;
	if (*p == '[') {
		const char *q = ++p;

		while (p < end && printusascii((unsigned char)*p) && *p != ']')
			p++;
		if (p == end || *p != ']' || p - q > MAX_PROCID)
			return 0;
		*pid = q;
		*pidl = (size_t)(p - q);
		p++;
		if (p < end && *p == ':')
			p++;
	} else if (*p == ':') {
		p++;
	} else {
		return 0;
	}
	if (p < end && *p == ' ')
		p++;
	return (size_t)(p - s);
}

static void parse_3164(const char *s, const char *end, int64_t now_ms, json_t *in, json_t *attrs)
{
	const char *tag = NULL, *pid = NULL, *w;
	size_t tagl = 0, pidl = 0, k;
	int64_t ms;

	k = bsd_time(s, end, now_ms, &ms);
	if (!k)
		k = iso_time(s, end, &ms);
	if (k && (s + k == end || s[k] == ' ')) {
		json_object_set_new(in, "timestamp", json_integer(ms));
		s += k;
		if (s < end)
			s++;
		/* The next word is the host unless it is already the tag. */
		for (w = s; w < end && printusascii((unsigned char)*w); w++)
			;
		if (w < end && *w == ' ' && w > s && w - s <= MAX_HOSTNAME &&
		    !bsd_tag(s, w, &tag, &tagl, &pid, &pidl)) {
			set_str(in, "host", s, (size_t)(w - s));
			s = w + 1;
		}
	}
	k = bsd_tag(s, end, &tag, &tagl, &pid, &pidl);
	if (k) {
		set_str(in, "service", tag, tagl);
		set_str(attrs, "syslog.procid", pid, pidl);
		s += k;
	}
	json_object_set_new(attrs, "syslog.format", json_string("rfc3164"));
	json_object_set_new(in, "message", msg_value(s, (size_t)(end - s)));
}

json_t *syslog_parse(const char *msg, size_t len, int64_t now_ms, char *why, size_t whylen)
{
	const char *end = msg + len, *s;
	json_t *in, *attrs;
	int pri, k;

	k = parse_pri(msg, len, &pri, why, whylen);
	if (k < 0)
		return NULL;
	s = msg + k;
	in = json_object();
	attrs = json_object();
	json_object_set_new(in, "attributes", attrs);
	json_object_set_new(in, "level", json_string(sev_levels[pri & 7]));
	json_object_set_new(attrs, "syslog.facility", json_string(facilities[pri >> 3]));
	json_object_set_new(attrs, "syslog.severity", json_string(severities[pri & 7]));
	if (end - s >= 2 && s[0] == '1' && s[1] == ' ') {
		if (parse_5424(s + 2, end, in, attrs, why, whylen) < 0) {
			json_decref(in);
			return NULL;
		}
	} else if (end - s >= 2 && s[0] >= '0' && s[0] <= '9' && s[1] == ' ') {
		bad(why, whylen, "unsupported syslog VERSION %.1s (RFC 5424 is 1)", s);
		json_decref(in);
		return NULL;
	} else {
		parse_3164(s, end, now_ms, in, attrs);
	}
	if (!json_object_get(in, "service"))
		json_object_set_new(in, "service", json_string("syslog"));
	return in;
}

/* ---- framing ---------------------------------------------------------------- */

void syslog_framer_init(struct syslog_framer *f, size_t max)
{
	memset(f, 0, sizeof(*f));
	f->max = max;
}

void syslog_framer_release(struct syslog_framer *f)
{
	free(f->buf);
	memset(f, 0, sizeof(*f));
}

bool syslog_framer_partial(const struct syslog_framer *f)
{
	return f->len > 0 || f->skip > 0 || f->skip_line;
}

/* Whether b[0..n) opens "LEN SP" (octet counting): -1 not (newline
 * framing), 0 not known yet, else the header's bytes with *msglen set. */
static int octet_header(const char *b, size_t n, size_t *msglen)
{
	size_t i = 0, v = 0;

	while (i < n && i < 10 && b[i] >= '0' && b[i] <= '9')
		v = v * 10 + (size_t)(b[i++] - '0');
	if (i == n && i < 10)
		return 0;
	if (i == 0 || i == 10 || b[i] != ' ' || v == 0 || b[0] == '0')
		return -1;
	*msglen = v;
	return (int)i + 1;
}

size_t syslog_framer_feed(struct syslog_framer *f, const char *data, size_t n, syslog_frame_fn fn,
			  void *ud)
{
	size_t pos = 0, frames = 0, mlen, k;
	const char *b, *lf;
	int h;

	/* What an oversized frame still has is dropped before buffering. */
	if (f->skip > 0) {
		k = n < f->skip ? n : f->skip;
		f->skip -= k;
		data += k;
		n -= k;
	}
	if (f->skip_line && n > 0) {
		lf = memchr(data, '\n', n);
		if (!lf)
			return 0;
		f->skip_line = false;
		n -= (size_t)(lf + 1 - data);
		data = lf + 1;
	}
	if (n == 0)
		return 0;
	if (f->len + n > f->cap) {
		f->cap = f->len + n;
		f->buf = lp_xrealloc(f->buf, f->cap);
	}
	memcpy(f->buf + f->len, data, n);
	f->len += n;
	b = f->buf;
	while (pos < f->len) {
		size_t avail = f->len - pos;

		h = (b[pos] >= '0' && b[pos] <= '9') ? octet_header(b + pos, avail, &mlen) : -1;
		if (h == 0)
			break;
		if (h > 0) {
			if (mlen > f->max) {
				/* Reported with its first max bytes, the rest dropped. */
				if (avail - (size_t)h < f->max)
					break;
				fn(ud, b + pos + h, f->max, "the message is larger than syslog.max_message");
				frames++;
				if (avail - (size_t)h >= mlen) {
					pos += (size_t)h + mlen;
					continue;
				}
				f->skip = mlen - (avail - (size_t)h);
				pos = f->len;
				break;
			}
			if (avail - (size_t)h < mlen)
				break;
			fn(ud, b + pos + h, mlen, NULL);
			frames++;
			pos += (size_t)h + mlen;
			continue;
		}
		lf = memchr(b + pos, '\n', avail);
		k = lf ? (size_t)(lf - (b + pos)) : avail;
		if (k > f->max) {
			fn(ud, b + pos, f->max, "the message is larger than syslog.max_message");
			frames++;
			if (lf) {
				pos += k + 1;
				continue;
			}
			f->skip_line = true;
			pos = f->len;
			break;
		}
		if (!lf)
			break;
		if (k > 0 && b[pos + k - 1] == '\r')
			k--;
		if (k > 0) {
			fn(ud, b + pos, k, NULL);
			frames++;
		}
		pos = (size_t)(lf + 1 - b);
	}
	memmove(f->buf, f->buf + pos, f->len - pos);
	f->len -= pos;
	/* Keep no more than a frame's worth allocated between reads. */
	if (f->cap > f->max + 64 && f->len <= f->max + 16) {
		f->cap = f->len > 0 ? f->len : 0;
		if (f->cap == 0) {
			free(f->buf);
			f->buf = NULL;
		} else {
			f->buf = lp_xrealloc(f->buf, f->cap);
		}
	}
	return frames;
}

size_t syslog_framer_finish(struct syslog_framer *f, syslog_frame_fn fn, void *ud)
{
	size_t mlen, k = f->len;
	int h;

	if (f->len == 0)
		return 0;
	h = (f->buf[0] >= '0' && f->buf[0] <= '9') ? octet_header(f->buf, f->len, &mlen) : -1;
	if (h >= 0) {
		fn(ud, f->buf + (h > 0 ? h : 0), f->len - (size_t)(h > 0 ? h : 0),
		   "the connection closed inside an octet-counted frame");
	} else {
		if (f->buf[k - 1] == '\r')
			k--;
		if (k > 0)
			fn(ud, f->buf, k, NULL);
	}
	f->len = 0;
	return k > 0 || h >= 0 ? 1 : 0;
}

/* ---- the receiver ------------------------------------------------------------ */

struct conn {
	int fd;
	struct syslog_framer fr;
	int64_t last_ms;    /* when a byte last arrived (or the accept) */
	int64_t frame_ms;   /* when the partial frame buffered began, 0 if none */
	char peer[INET6_ADDRSTRLEN];
};

struct syslog_rx {
	struct syslog_opts o;  /* settings (listen not kept) */
	int lfd, ufd, efd;     /* TCP listener, UDP socket (-1 if off), stop's eventfd */
	int port;              /* the TCP port bound */
	struct conn *conns;    /* open connections */
	size_t nconns;         /* in conns */
	pthread_t thread;      /* runs rx_main */
	bool started;          /* thread was created */
	atomic_int stop;       /* syslog_rx_stop asked */
	char *rbuf;            /* one read's or datagram's bytes */
	struct syslog_event *batch; /* the round's normalised events */
	size_t nbatch;         /* in batch */
	/* The deliverer: the sink waits for Kafka on its own thread, so that
	 * the next round is read and parsed meanwhile (one batch in hand at
	 * most, delivered in order). */
	pthread_t deliverer;   /* runs deliver_main */
	bool deliverer_started;
	pthread_mutex_t mu;    /* guards handed, nhanded, deliver_stop */
	pthread_cond_t cv;     /* signalled when handed is set or cleared */
	struct syslog_event *handed; /* the batch being delivered, NULL when idle */
	size_t nhanded;        /* in handed */
	bool deliver_stop;     /* deliver_main must end (nothing handed) */
	struct syslog_event *spare; /* the other batch buffer */
	int dfd;               /* eventfd: the deliverer went idle (wakes poll) */
	const char *peer;      /* the sender of the frame being handled */
	char udp_peer[INET6_ADDRSTRLEN]; /* the last datagram's */
	struct lp_series *received, *malformed, *dropped, *delivered, *conns_open, *refused, *timeouts;
};

static void dead(struct syslog_rx *rx, const char *raw, size_t len, const char *reason)
{
	lp_series_inc(rx->malformed);
	lp_debug("syslog: from %s: %s", rx->peer, reason);
	rx->o.sink.dead_letter(rx->o.sink.ud, raw, len, reason);
}

static void *deliver_main(void *arg)
{
	struct syslog_rx *rx = arg;
	uint64_t one = 1;
	size_t ok, i, n;

	pthread_mutex_lock(&rx->mu);
	for (;;) {
		while (!rx->handed && !rx->deliver_stop)
			pthread_cond_wait(&rx->cv, &rx->mu);
		if (!rx->handed)
			break;
		n = rx->nhanded;
		pthread_mutex_unlock(&rx->mu);
		ok = rx->o.sink.deliver(rx->o.sink.ud, rx->handed, n);
		lp_series_add(rx->delivered, (double)ok);
		if (ok < n) {
			lp_series_add(rx->dropped, (double)(n - ok));
			lp_warn("syslog: %zu of %zu messages could not be made durable and are lost",
				n - ok, n);
		}
		for (i = 0; i < n; i++) {
			free(rx->handed[i].text);
			free(rx->handed[i].keybuf);
		}
		pthread_mutex_lock(&rx->mu);
		rx->spare = rx->handed;
		rx->handed = NULL;
		pthread_cond_broadcast(&rx->cv);
		if (write(rx->dfd, &one, sizeof(one)) < 0)
			lp_debug("syslog: cannot wake the receiver: %s", strerror(errno));
	}
	pthread_mutex_unlock(&rx->mu);
	return NULL;
}

/* Whether the deliverer is idle (a batch handed now goes at once). */
static bool deliverer_idle(struct syslog_rx *rx)
{
	bool idle;

	pthread_mutex_lock(&rx->mu);
	idle = rx->handed == NULL;
	pthread_mutex_unlock(&rx->mu);
	return idle;
}

/* Hands the round's batch to the deliverer, waiting for it to finish the
 * one before: the receiver is at most one batch ahead of Kafka. */
static void flush_batch(struct syslog_rx *rx)
{
	if (rx->nbatch == 0)
		return;
	pthread_mutex_lock(&rx->mu);
	while (rx->handed)
		pthread_cond_wait(&rx->cv, &rx->mu);
	rx->handed = rx->batch;
	rx->nhanded = rx->nbatch;
	rx->batch = rx->spare;
	rx->spare = NULL;
	rx->nbatch = 0;
	pthread_cond_broadcast(&rx->cv);
	pthread_mutex_unlock(&rx->mu);
}

/*
 * One message: parsed, normalised and added to the round's batch as text.
 * The normalising is /api/logs's: the one-pass scanner when it is sure of
 * the event (it writes exactly what the tree path would), else
 * lp_event_normalize, which also words a refusal.
 */
static void on_frame(void *ud, const char *frame, size_t len, const char *error)
{
	struct syslog_rx *rx = ud;
	struct syslog_event *out = &rx->batch[rx->nbatch];
	struct lp_event_error e;
	struct lp_event_fast f;
	char why[200], *text;
	json_t *in, *ev;
	int64_t now = lp_wall_ms();
	const char *svc;

	lp_series_inc(rx->received);
	if (error) {
		dead(rx, frame, len, error);
		return;
	}
	if (rx->nbatch == ROUND_MAX_MSGS) { /* closing many connections at once */
		flush_batch(rx);
		out = &rx->batch[0];
	}
	in = syslog_parse(frame, len, now, why, sizeof(why));
	if (!in) {
		dead(rx, frame, len, why);
		return;
	}
	if (rx->peer[0] && lp_ip_valid(rx->peer))
		json_object_set_new(in, "source_ip", json_string(rx->peer));
	text = json_dumps(in, JSON_COMPACT);
	if (text && lp_event_scan_input(text, strlen(text), rx->o.limits, now, NULL, &f) == 0) {
		*out = (struct syslog_event){ .text = f.text, .len = f.len, .key = f.service,
					      .keylen = f.service_len };
		memcpy(out->id, f.id, sizeof(out->id));
		rx->nbatch++;
		goto out;
	}
	ev = lp_event_normalize(in, rx->o.limits, now, NULL, &e);
	if (!ev) {
		snprintf(why, sizeof(why), "%s: %s", e.code, e.message);
		dead(rx, frame, len, why);
		goto out;
	}
	svc = json_string_value(json_object_get(ev, "service"));
	*out = (struct syslog_event){ .text = json_dumps(ev, JSON_COMPACT) };
	if (out->text) {
		out->len = strlen(out->text);
		out->keybuf = lp_xstrdup(svc ? svc : "");
		out->key = out->keybuf;
		out->keylen = strlen(out->keybuf);
		lp_strlcpy(out->id, json_string_value(json_object_get(ev, "id")), sizeof(out->id));
		rx->nbatch++;
	}
	json_decref(ev);
out:
	free(text);
	json_decref(in);
}

static void peer_name(const struct sockaddr_storage *sa, char *out, size_t len)
{
	const void *a = sa->ss_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
						  : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;

	if (!inet_ntop(sa->ss_family, a, out, (socklen_t)len))
		out[0] = '\0';
	/* An IPv4 sender on a dual-stack socket reads as ::ffff:a.b.c.d. */
	if (lp_str_has_prefix(out, "::ffff:") && strchr(out, '.'))
		memmove(out, out + 7, strlen(out + 7) + 1);
}

/* Closes connection i.  What it buffers is a last message (a line without
 * its LF) at the end of the stream, but dead-lettered with why when the
 * receiver cuts the connection off. */
static void conn_close(struct syslog_rx *rx, size_t i, const char *why)
{
	struct conn *c = &rx->conns[i];

	rx->peer = c->peer;
	if (why && c->fr.len > 0)
		on_frame(rx, c->fr.buf, c->fr.len, why);
	else
		syslog_framer_finish(&c->fr, on_frame, rx);
	close(c->fd);
	syslog_framer_release(&c->fr);
	rx->conns[i] = rx->conns[--rx->nconns];
	lp_series_set(rx->conns_open, (double)rx->nconns);
}

static void do_accept(struct syslog_rx *rx)
{
	for (;;) {
		struct sockaddr_storage sa;
		socklen_t sl = sizeof(sa);
		int fd = accept4(rx->lfd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct conn *c;

		if (fd < 0)
			return;
		if (rx->nconns >= (size_t)rx->o.max_conns) {
			lp_series_inc(rx->refused);
			close(fd);
			continue;
		}
		c = &rx->conns[rx->nconns++];
		memset(c, 0, sizeof(*c));
		c->fd = fd;
		c->last_ms = lp_now_ms();
		syslog_framer_init(&c->fr, rx->o.max_message);
		peer_name(&sa, c->peer, sizeof(c->peer));
		lp_series_set(rx->conns_open, (double)rx->nconns);
	}
}

/* Reads what connection i has, a few reads at most and no more messages
 * than the round has room for; false once it is closed. */
static bool do_read(struct syslog_rx *rx, size_t i)
{
	struct conn *c = &rx->conns[i];
	int reads = 0;

	rx->peer = c->peer;
	while (reads++ < 4 && rx->nbatch + 4 < ROUND_MAX_MSGS) {
		/* A feed reports at most one frame per two bytes ("x" and its
		 * LF) plus the one it had begun, and closing one more: the
		 * batch cannot overflow. */
		size_t room = (ROUND_MAX_MSGS - rx->nbatch - 2) * 2;
		ssize_t n = read(c->fd, rx->rbuf, room < READ_BYTES ? room : READ_BYTES);

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return true;
		if (n <= 0) {
			conn_close(rx, i, NULL);
			return false;
		}
		c->last_ms = lp_now_ms();
		/* The message buffered began in this read when one ended in it
		 * (at the latest): a steady stream is never inside one message
		 * for long, however its reads cut it. */
		if (syslog_framer_feed(&c->fr, rx->rbuf, (size_t)n, on_frame, rx) > 0 || !c->frame_ms)
			c->frame_ms = c->last_ms;
		if (!syslog_framer_partial(&c->fr))
			c->frame_ms = 0;
	}
	return true;
}

static void do_udp(struct syslog_rx *rx)
{
	int count = 0;

	rx->peer = rx->udp_peer;
	while (rx->nbatch < ROUND_MAX_MSGS && count++ < 1024) {
		struct sockaddr_storage sa;
		socklen_t sl = sizeof(sa);
		ssize_t n = recvfrom(rx->ufd, rx->rbuf, rx->o.max_message + 1, MSG_TRUNC,
				     (struct sockaddr *)&sa, &sl);
		size_t len;

		if (n < 0)
			return;
		peer_name(&sa, rx->udp_peer, sizeof(rx->udp_peer));
		if ((size_t)n > rx->o.max_message) {
			on_frame(rx, rx->rbuf, rx->o.max_message,
				 "the message is larger than syslog.max_message");
			continue;
		}
		len = (size_t)n;
		while (len > 0 && (rx->rbuf[len - 1] == '\n' || rx->rbuf[len - 1] == '\r' ||
				   rx->rbuf[len - 1] == '\0'))
			len--;
		if (len > 0)
			on_frame(rx, rx->rbuf, len, NULL);
	}
}

/* When connection c is cut off: idle_timeout_ms after its last byte, or
 * message_timeout_ms after the message it is inside began. */
static int64_t deadline(const struct syslog_rx *rx, const struct conn *c)
{
	int64_t idle = c->last_ms + rx->o.idle_timeout_ms;
	int64_t msg = c->frame_ms + rx->o.message_timeout_ms;

	return c->frame_ms && msg < idle ? msg : idle;
}

static void expire(struct syslog_rx *rx, int64_t now)
{
	size_t i = 0;

	while (i < rx->nconns) {
		struct conn *c = &rx->conns[i];

		if (now >= deadline(rx, c)) {
			lp_series_inc(rx->timeouts);
			lp_debug("syslog: closing the connection of %s: %s", c->peer,
				 c->frame_ms ? "a message took too long" : "silent too long");
			conn_close(rx, i, c->frame_ms ? "the connection timed out inside a message" : NULL);
			continue;
		}
		i++;
	}
}

static void *rx_main(void *arg)
{
	struct syslog_rx *rx = arg;
	size_t nfds = (size_t)rx->o.max_conns + 4;
	struct pollfd *fds = lp_xcalloc(nfds, sizeof(*fds));
	size_t i, base;
	uint64_t ev;

	while (!atomic_load(&rx->stop)) {
		int64_t now = lp_now_ms(), next = now + 1000;
		size_t n = 0, nc = rx->nconns;

		for (i = 0; i < rx->nconns; i++)
			if (deadline(rx, &rx->conns[i]) < next)
				next = deadline(rx, &rx->conns[i]);
		fds[n++] = (struct pollfd){ .fd = rx->efd, .events = POLLIN };
		fds[n++] = (struct pollfd){ .fd = rx->dfd, .events = POLLIN };
		fds[n++] = (struct pollfd){ .fd = rx->lfd, .events = POLLIN };
		fds[n++] = (struct pollfd){ .fd = rx->ufd, .events = POLLIN };
		base = n;
		for (i = 0; i < nc; i++)
			fds[n++] = (struct pollfd){ .fd = rx->conns[i].fd, .events = POLLIN };
		if (poll(fds, n, next > now ? (int)(next - now) : 0) < 0 && errno != EINTR)
			break;
		if (fds[0].revents)
			break;
		if (fds[1].revents && read(rx->dfd, &ev, sizeof(ev)) < 0)
			ev = 0;
		if (rx->ufd >= 0 && fds[3].revents)
			do_udp(rx);
		/* Backwards: closing connection i moves the last one into its slot. */
		for (i = nc; i-- > 0;)
			if (fds[base + i].revents && rx->nbatch + 4 < ROUND_MAX_MSGS)
				do_read(rx, i);
		if (fds[2].revents)
			do_accept(rx);
		expire(rx, lp_now_ms());
		/* While the deliverer is busy the batch grows, up to full: then
		 * wait for it (the senders wait in the socket buffers). */
		if (rx->nbatch + 4 >= ROUND_MAX_MSGS || (rx->nbatch > 0 && deliverer_idle(rx)))
			flush_batch(rx);
	}
	flush_batch(rx);
	free(fds);
	return NULL;
}

/* "host:port", "[v6]:port", ":port" or "port" into host (NULL: any) and port. */
static int split_addr(const char *listen, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *colon = strrchr(listen, ':');
	size_t hl;

	if (!colon) {
		lp_strlcpy(port, listen, portlen);
		host[0] = '\0';
		return 0;
	}
	lp_strlcpy(port, colon + 1, portlen);
	hl = (size_t)(colon - listen);
	if (hl >= 2 && listen[0] == '[' && listen[hl - 1] == ']') {
		listen++;
		hl -= 2;
	}
	if (hl >= hostlen)
		return -EINVAL;
	memcpy(host, listen, hl);
	host[hl] = '\0';
	return 0;
}

static int bind_one(const char *host, const char *port, int type, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_flags = AI_PASSIVE, .ai_family = AF_UNSPEC, .ai_socktype = type };
	struct addrinfo *res = NULL;
	int fd = -1, one = 1, rc;

	rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "syslog.listen \"%s:%s\": %s", host, port, gai_strerror(rc));
		return -1;
	}
	fd = socket(res->ai_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 ||
	    (type == SOCK_STREAM && listen(fd, 128) < 0)) {
		snprintf(err, errlen, "syslog: cannot %s %s \"%s:%s\": %s",
			 fd < 0 ? "open a socket for" : "bind", type == SOCK_STREAM ? "TCP" : "UDP",
			 host, port, strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

struct syslog_rx *syslog_rx_start(const struct syslog_opts *o, char *err, size_t errlen)
{
	struct syslog_rx *rx = lp_xcalloc(1, sizeof(*rx));
	struct sockaddr_storage sa;
	socklen_t sl = sizeof(sa);
	char host[256], port[32];
	int bufsz = 4 << 20;

	rx->o = *o;
	rx->o.listen = NULL;
	rx->lfd = rx->ufd = rx->efd = rx->dfd = -1;
	pthread_mutex_init(&rx->mu, NULL);
	pthread_cond_init(&rx->cv, NULL);
	rx->received = lp_counter(o->metrics, "syslog_messages_received_total",
				  "Syslog messages received (TCP frames and UDP datagrams)");
	rx->malformed = lp_counter(o->metrics, "syslog_messages_malformed_total",
				   "Syslog messages refused (unparsable, invalid or oversized), sent to the DLQ topic");
	rx->delivered = lp_counter(o->metrics, "syslog_messages_delivered_total",
				   "Syslog messages made durable (Kafka or the spool)");
	rx->dropped = lp_counter(o->metrics, "syslog_messages_dropped_total",
				 "Syslog messages lost because neither Kafka nor the spool took them");
	rx->conns_open = lp_gauge(o->metrics, "syslog_connections", "Open syslog TCP connections");
	rx->refused = lp_counter(o->metrics, "syslog_connections_refused_total",
				 "Syslog TCP connections closed at accept (syslog.max_connections)");
	rx->timeouts = lp_counter(o->metrics, "syslog_connections_timed_out_total",
				  "Syslog TCP connections closed for silence or a message never finished");
	if (split_addr(o->listen, host, sizeof(host), port, sizeof(port)) < 0) {
		snprintf(err, errlen, "syslog.listen \"%s\" is not host:port", o->listen);
		goto fail;
	}
	rx->lfd = bind_one(host, port, SOCK_STREAM, err, errlen);
	if (rx->lfd < 0)
		goto fail;
	if (getsockname(rx->lfd, (struct sockaddr *)&sa, &sl) == 0)
		rx->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
							  : ((struct sockaddr_in *)&sa)->sin_port);
	if (o->udp) {
		/* The same port as TCP, also when 0 picked it. */
		snprintf(port, sizeof(port), "%d", rx->port);
		rx->ufd = bind_one(host, port, SOCK_DGRAM, err, errlen);
		if (rx->ufd < 0)
			goto fail;
		/* Room for bursts while a batch waits for Kafka (best effort). */
		setsockopt(rx->ufd, SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof(bufsz));
	}
	rx->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	rx->dfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (rx->efd < 0 || rx->dfd < 0) {
		snprintf(err, errlen, "syslog: eventfd: %s", strerror(errno));
		goto fail;
	}
	rx->conns = lp_xcalloc((size_t)o->max_conns, sizeof(*rx->conns));
	rx->rbuf = lp_xmalloc((o->max_message > READ_BYTES ? o->max_message : READ_BYTES) + 1);
	rx->batch = lp_xcalloc(ROUND_MAX_MSGS + 1, sizeof(*rx->batch));
	rx->spare = lp_xcalloc(ROUND_MAX_MSGS + 1, sizeof(*rx->spare));
	rx->peer = "";
	if (pthread_create(&rx->deliverer, NULL, deliver_main, rx) != 0) {
		snprintf(err, errlen, "syslog: cannot start the deliverer's thread");
		goto fail;
	}
	rx->deliverer_started = true;
	if (pthread_create(&rx->thread, NULL, rx_main, rx) != 0) {
		snprintf(err, errlen, "syslog: cannot start the receiver's thread");
		goto fail;
	}
	rx->started = true;
	return rx;
fail:
	syslog_rx_stop(rx);
	return NULL;
}

int syslog_rx_port(const struct syslog_rx *rx)
{
	return rx->port;
}

void syslog_rx_stop(struct syslog_rx *rx)
{
	uint64_t one = 1;

	if (!rx)
		return;
	atomic_store(&rx->stop, 1);
	if (rx->started) {
		if (write(rx->efd, &one, sizeof(one)) < 0)
			lp_warn("syslog: cannot wake the receiver: %s", strerror(errno));
		pthread_join(rx->thread, NULL);
	}
	/* The deliverer ends once the batch handed last is delivered. */
	if (rx->deliverer_started) {
		pthread_mutex_lock(&rx->mu);
		rx->deliver_stop = true;
		pthread_cond_broadcast(&rx->cv);
		pthread_mutex_unlock(&rx->mu);
		pthread_join(rx->deliverer, NULL);
	}
	/* Nothing is delivered any more: what connections still buffer is lost. */
	while (rx->nconns > 0) {
		close(rx->conns[rx->nconns - 1].fd);
		syslog_framer_release(&rx->conns[--rx->nconns].fr);
	}
	if (rx->lfd >= 0)
		close(rx->lfd);
	if (rx->ufd >= 0)
		close(rx->ufd);
	if (rx->efd >= 0)
		close(rx->efd);
	if (rx->dfd >= 0)
		close(rx->dfd);
	pthread_mutex_destroy(&rx->mu);
	pthread_cond_destroy(&rx->cv);
	free(rx->spare);
	free(rx->conns);
	free(rx->rbuf);
	free(rx->batch);
	free(rx);
}
