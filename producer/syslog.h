/* syslog.h - the producer's syslog receiver: RFC 5424 and RFC 3164 messages
 * over TCP (RFC 6587 octet counting or newline framing) and UDP.
 *
 * Three layers, each usable alone (the unit tests and the fuzzer do):
 *
 *   syslog_parse   one message -> an input object for lp_event_normalize
 *                  (the mapping is in docs/syslog.md);
 *   the framer     a TCP byte stream -> messages, bounded by a largest
 *                  message size;
 *   syslog_rx      one thread polling the TCP listener, its connections
 *                  and the UDP socket; the messages of one poll round are
 *                  normalised and handed to the sink as one batch, the
 *                  ones that do not parse or normalise are dead-lettered
 *                  with the reason.
 *
 * Syslog has no application acknowledgement: the receiver never answers,
 * so what the sink cannot make durable is counted and lost (docs/syslog.md
 * says what a sender can rely on). */
#ifndef LOGPIPE_PRODUCER_SYSLOG_H
#define LOGPIPE_PRODUCER_SYSLOG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "logpipe/event.h"
#include "logpipe/metrics.h"

/* Parses one syslog message (no framing: no octet count, no trailing LF)
 * received at now_ms.  Returns a new input object (message, service,
 * level, timestamp, host, attributes) or NULL with the reason in why.
 * RFC 3164's timestamp has no year: the receiver's current one, moved
 * back (forward) a year for a December (January) message received in
 * January (December); it is read in the receiver's local time zone. */
json_t *syslog_parse(const char *msg, size_t len, int64_t now_ms, char *why, size_t whylen);

/* Called once per framed message, in order; error non-NULL when the frame
 * is not a message (frame then holds at most its first max bytes). */
typedef void (*syslog_frame_fn)(void *ud, const char *frame, size_t len, const char *error);

/* Splits one TCP connection's byte stream into messages.  A frame that
 * starts with a digit is octet-counted ("LEN SP MSG"), any other is a line
 * ended by LF (a CR before it is dropped, empty lines are skipped).  A
 * frame larger than max is reported as an error and skipped, without
 * buffering more than max bytes of it. */
struct syslog_framer {
	char *buf;     /* bytes not yet framed */
	size_t len;    /* bytes in buf */
	size_t cap;    /* buf's allocation */
	size_t max;    /* largest message */
	size_t skip;   /* bytes of an oversized octet-counted frame still to drop */
	bool skip_line; /* dropping an oversized line up to its LF */
};

void syslog_framer_init(struct syslog_framer *f, size_t max);
void syslog_framer_release(struct syslog_framer *f);
/* Frames data[0..n); returns the number of frames reported. */
size_t syslog_framer_feed(struct syslog_framer *f, const char *data, size_t n, syslog_frame_fn fn,
			  void *ud);
/* At the end of the stream: a last line without LF is a message, a cut
 * octet-counted frame an error.  Returns the number reported (0 or 1). */
size_t syslog_framer_finish(struct syslog_framer *f, syslog_frame_fn fn, void *ud);
/* Whether part of a frame is buffered (or being skipped). */
bool syslog_framer_partial(const struct syslog_framer *f);

/* One normalised event, serialised (what goes to Kafka). */
struct syslog_event {
	char *text;          /* the event, JSON (owned by the receiver) */
	size_t len;          /* bytes of text */
	const char *key;     /* its service, the Kafka key (not NUL-terminated) */
	size_t keylen;       /* bytes of key */
	char *keybuf;        /* key's allocation when it is not inside text */
	char id[37];         /* its id */
};

/* Where the receiver's messages go (the producer). */
struct syslog_sink {
	void *ud;
	/* Makes normalised events durable (Kafka or the spool), as /api/logs
	 * does; returns how many were.  The events are borrowed.  Called from
	 * the receiver's thread. */
	size_t (*deliver)(void *ud, const struct syslog_event *events, size_t n);
	/* Sends bytes that are not an acceptable message to the DLQ with the
	 * reason; must not wait for Kafka. */
	void (*dead_letter)(void *ud, const char *raw, size_t len, const char *reason);
};

struct syslog_opts {
	const char *listen;        /* "host:port", "[v6]:port" or "port"; port 0 picks one */
	bool udp;                  /* also receive datagrams on the same address and port */
	size_t max_message;        /* largest message in bytes (frame or datagram) */
	int max_conns;             /* TCP connections at once; more are closed at accept */
	int idle_timeout_ms;       /* a connection silent this long is closed */
	int message_timeout_ms;    /* ... and one inside a message this long (dead-lettered) */
	const struct lp_event_limits *limits; /* for lp_event_normalize */
	struct lp_registry *metrics;
	struct syslog_sink sink;
};

struct syslog_rx;

/* Binds and starts the receiver's thread.  NULL with a message in err. */
struct syslog_rx *syslog_rx_start(const struct syslog_opts *o, char *err, size_t errlen);
/* The TCP port bound (the UDP socket has the same). */
int syslog_rx_port(const struct syslog_rx *rx);
/* Stops the thread (the batch in hand is delivered first), closes every
 * socket.  Safe on NULL. */
void syslog_rx_stop(struct syslog_rx *rx);

#endif
