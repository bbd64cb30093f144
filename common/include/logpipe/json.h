/* json.h - parsing JSON from outside the process without deep recursion.
 *
 * jansson parses, frees and serialises recursively, one stack frame or more
 * per level of nesting, and its own limit (JSON_PARSER_MAX_DEPTH, 2048) is
 * far more than the 100 KiB stacks of CivetWeb's worker threads hold: a
 * body of a few thousand '[' killed a service with SIGSEGV.  Every parse of
 * text that comes from outside (request bodies, Kafka payloads, Redis and
 * PostgreSQL values) goes through lp_json_loadb / lp_json_loads, which
 * refuse text nesting deeper than LP_JSON_MAX_DEPTH before jansson sees it.
 * Thread-safe: no state. */
#ifndef LOGPIPE_JSON_H
#define LOGPIPE_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Deepest nesting of arrays and objects the parsers below accept.  Events
 * are limited to 8 levels (struct lp_event_limits), so this is a bound on
 * hostile input, not on anything a client needs. */
#define LP_JSON_MAX_DEPTH 64

/* Like json_loadb, but text nesting arrays and objects deeper than
 * LP_JSON_MAX_DEPTH is refused without being parsed: NULL, with err (may be
 * NULL) set as jansson would, code json_error_stack_overflow and the text
 * "maximum parsing depth reached". */
json_t *lp_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *err);
/* The same for a NUL-terminated string. */
json_t *lp_json_loads(const char *s, size_t flags, json_error_t *err);

/* True when the text b[0, n) nests arrays and objects deeper than max.
 * Brackets inside strings do not count; the text need not be valid JSON
 * (no parser recurses further into text than this counts).  When
 * where is not NULL, *where is set to the offset of the bracket past max. */
bool lp_json_too_deep(const char *b, size_t n, int max, size_t *where);

#endif
