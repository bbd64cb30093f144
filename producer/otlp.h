/* otlp.h - OTLP/HTTP logs: an export request's log records as logpipe
 * input events, and the replies the OpenTelemetry protocol expects.
 *
 * POST /v1/logs carries an ExportLogsServiceRequest in one of two
 * encodings, told by Content-Type: application/x-protobuf (decoded by
 * protobuf-c from producer/proto/) or application/json (OTLP JSON:
 * lowerCamelCase names, traceId/spanId as hex, 64-bit integers as strings
 * or numbers, enums as numbers or names).  Both are mapped the same way,
 * one input event per log record, in request order (docs/otlp.md has the
 * table): the producer then normalises and delivers them as it does a
 * batch, so durability is the same as /api/logs/batch's.
 *
 * Nothing here keeps state: the functions are thread-safe and recurse at
 * most OTLP_MAX_DEPTH levels (CivetWeb's worker stacks are small). */
#ifndef LOGPIPE_OTLP_H
#define LOGPIPE_OTLP_H

#include <stddef.h>
#include <stdint.h>

#include "logpipe/event.h"

/* Deepest message nesting of a protobuf request (the request itself is 1,
 * a log record 4, each level of kvlist inside a body or an attribute 3
 * more) and deepest JSON nesting of a JSON one; deeper is refused whole. */
#define OTLP_MAX_DEPTH 32

enum otlp_encoding {
	OTLP_PROTOBUF, /* application/x-protobuf */
	OTLP_JSON,     /* application/json */
};

/* The encoding of a Content-Type value (parameters ignored), or -1 when it
 * is neither.  An absent Content-Type is protobuf, OTLP's default. */
int otlp_encoding_of(const char *content_type);

/* Inflates a gzip body into *out (malloc'd, NUL-terminated; the caller
 * frees it) of at most max bytes.  Returns 0, -EINVAL when the body is not
 * gzip or is cut short, -E2BIG when it inflates to more than max. */
int otlp_gunzip(const char *in, size_t len, size_t max, char **out, size_t *outlen);

/* Decodes an ExportLogsServiceRequest and calls fn once per log record in
 * order, with the record as an input object for lp_event_normalize (fn may
 * json_incref it) or NULL and why the record cannot be mapped.  Returns the
 * number of records, or -EINVAL (the body does not decode; why in err),
 * -ELOOP (nested deeper than OTLP_MAX_DEPTH), -E2BIG (more than
 * max_records, found before fn is first called).  fn returning non-zero
 * stops the walk. */
long otlp_decode(const char *body, size_t len, enum otlp_encoding enc, size_t max_records,
		 lp_batch_item_fn fn, void *ud, char *err, size_t errlen);

/* A log record's normalised event, written by otlp_decode_fast. */
struct otlp_event {
	struct lp_event_fast ev; /* as lp_event_scan_input's: text (malloc'd; the callee
				  * owns it), id, and the service inside text */
	char trace[33];          /* the event's trace_id, "" if it has none */
	char span[17];           /* its span_id, "" if it has none */
};

/* Receives one record's event: returns non-zero to stop the walk. */
typedef int (*otlp_event_fn)(void *ud, size_t index, struct otlp_event *ev);

/* What otlp_decode_fast normalises with: the arguments the producer would
 * give lp_event_normalize (lim NULL for lp_event_default_limits). */
struct otlp_fast {
	const struct lp_event_limits *lim;
	int64_t now_ms;
	const char *tenant;
	otlp_event_fn fn; /* called with the records written here */
};

/* otlp_decode, but for a protobuf request, each record whose event is
 * certain goes to fast->fn as the text lp_event_normalize and json_dumps
 * (JSON_COMPACT) would make of the input object fn gets (a fresh UUIDv7
 * as id): no JSON tree is built.  The others (a refusal, a limit, a case
 * the writer leaves to the tree, docs in otlp.c) go to fn as from
 * otlp_decode, in the same order, each index exactly once.  The events
 * have no trace context from the request's traceparent: that is the
 * caller's (an event with a span_id and no trace_id always goes to fn).
 * fast NULL, or a JSON request: otlp_decode. */
long otlp_decode_fast(const char *body, size_t len, enum otlp_encoding enc, size_t max_records,
		      const struct otlp_fast *fast, lp_batch_item_fn fn, void *ud, char *err,
		      size_t errlen);

/* The 200 reply: an ExportLogsServiceResponse, with partialSuccess when
 * rejected > 0 or msg is non-empty.  *out is malloc'd (the caller frees
 * it); its Content-Type is the encoding's. */
void otlp_response(enum otlp_encoding enc, long long rejected, const char *msg, char **out,
		   size_t *outlen);

/* An error reply's body: a google.rpc.Status with code (a gRPC code) and
 * msg, in the encoding.  *out is malloc'd. */
void otlp_status(enum otlp_encoding enc, int code, const char *msg, char **out, size_t *outlen);

/* The Content-Type of replies in enc. */
const char *otlp_content_type(enum otlp_encoding enc);

#endif
