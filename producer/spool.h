/* spool.h - the producer's on-disk write-ahead spool for events Kafka cannot take.
 *
 * While Kafka is unreachable the producer appends each accepted event (its
 * Kafka key and serialised value) to the spool and answers 202 only once
 * spool_append() returned 0, i.e. once the record is fsync'd.  One drain
 * thread reads the records back in order, produces them and, once Kafka
 * acknowledged them, commits the position reached; finished segments are
 * then deleted.  After a crash, spool_open() finds what was not drained.
 *
 * On disk (all integers little-endian), in the spool directory:
 *
 *   LOCK                   flock()ed by the process using the directory
 *   checkpoint             "LPSPCKP1", u64 segment, u64 offset, u32 CRC-32C
 *                          of the 24 bytes before it: the drained position
 *   00000000000000000007.seg
 *                          a segment: "LPSPOOL2", u64 its number (16 bytes),
 *                          then records back to back:
 *       u32 len            bytes of what follows the CRC
 *       u32 crc            CRC-32C of the len field and those bytes
 *       u32 keylen, key[keylen],
 *       u32 hdrlen, headers[hdrlen]: Kafka record headers, each
 *                          u32 namelen, name, u32 vallen, value,
 *       value[the rest]
 *
 * Segments of the first format ("LPSPOOL1", written before the records
 * carried headers: u32 keylen, key, value) are still recovered and
 * drained, as records without headers; new segments are always "LPSPOOL2".
 *
 * Segments are numbered in order; only the newest one is written to, the
 * others are sealed.  spool_open() scans every segment from the
 * checkpoint on, counts its records and cuts each file at the first record
 * that is incomplete or fails its CRC: a torn tail left by a crash, whose
 * writer was never answered.  It then starts a new segment for appends.
 *
 * Thread-safety: spool_append() may be called from any number of threads
 * at once; concurrent appends share one fdatasync (group commit).  The
 * reading side (spool_read, spool_commit) belongs to one thread at a time.
 * Errors follow logpipe's convention: 0 or a negative errno; spool_open
 * returns NULL with a message in err. */
#ifndef LOGPIPE_PRODUCER_SPOOL_H
#define LOGPIPE_PRODUCER_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lp_registry;

#define SPOOL_SEG_HEADER 16u /* bytes before a segment's first record */
#define SPOOL_REC_HEADER 12u /* len, crc and keylen before a record's key */
/* The largest segment any configuration may use (spool.segment_bytes), so
 * the largest len field any record on disk can carry is
 * SPOOL_SEG_MAX - SPOOL_SEG_HEADER - 8: the format's limit, against which
 * recovery and reading check records whatever segment_bytes is today. */
#define SPOOL_SEG_MAX (UINT64_C(1) << 32)

struct spool_opts {
	const char *dir;            /* directory, created if missing */
	uint64_t max_bytes;         /* bound on the bytes of all segment files */
	uint64_t segment_bytes;     /* a segment is sealed before it grows past this
	                             * (64..SPOOL_SEG_MAX) */
	struct lp_registry *metrics; /* where the logpipe_spool_* metrics go; NULL: none */
};

/* One Kafka record header (borrowed; neither part is NUL-terminated). */
struct spool_hdr {
	const char *name;           /* header name */
	size_t namelen;             /* bytes of name */
	const char *val;            /* header value */
	size_t vallen;              /* bytes of val */
};

/* One record: the Kafka key, value and headers of an event (borrowed). */
struct spool_rec {
	const char *key;            /* Kafka key */
	size_t keylen;              /* bytes of key */
	const char *val;            /* Kafka value */
	size_t vallen;              /* bytes of val */
	const struct spool_hdr *hdrs; /* its record headers, in order; NULL when none */
	size_t nhdrs;               /* entries in hdrs */
};

/* A place in the spool: segment number and byte offset in that file. */
struct spool_pos {
	uint64_t seg;
	uint64_t off;
};

/* What spool_read() returns: records pointing into buf, and where each ends. */
struct spool_batch {
	struct spool_rec *recs;  /* the records, in spool order */
	struct spool_pos *ends;  /* ends[i]: the position just after recs[i] */
	size_t n;                /* records in recs */
	size_t cap;              /* room in recs and ends */
	char *buf;               /* the bytes read (recs point into it) */
	size_t bufcap;           /* bytes allocated in buf */
	struct spool_hdr *hdrs;  /* the headers of all recs (recs[i].hdrs point into it) */
	size_t nhdrs;            /* entries used in hdrs */
	size_t hdrcap;           /* room in hdrs */
	struct spool_pos end;    /* position after the batch (== ends[n-1] when n > 0) */
};

struct spool_stats {
	uint64_t bytes;          /* bytes of all segment files (the bounded quantity) */
	uint64_t events;         /* records appended and not yet drained */
	uint64_t max_bytes;      /* the bound */
	uint64_t segments;       /* segment files */
	uint64_t written_total;  /* records appended since open */
	uint64_t drained_total;  /* records committed as drained since open */
	uint64_t fsyncs_total;   /* fdatasync calls made for appends since open */
	uint64_t recovered;      /* records found on disk at open */
	uint64_t discarded_bytes; /* torn or corrupt bytes cut off at open */
	bool broken;             /* an I/O error made the spool refuse appends */
	int seg_errno;           /* why the last attempt to start a segment failed; 0 once
	                          * one succeeds (appends needing one fail meanwhile) */
};

/* Opens (creating if needed) the spool in o->dir, recovers what it holds
 * and locks the directory against other processes.  NULL with err on
 * failure (another process holds the directory, I/O error, bad options). */
struct spool *spool_open(const struct spool_opts *o, char *err, size_t errlen);
/* Syncs and closes.  Records not drained stay for the next spool_open().
 * NULL is a no-op. */
void spool_close(struct spool *s);

/* Appends n records and returns once all of them are on disk (fdatasync).
 * All or nothing: -ENOSPC when they would take the spool past max_bytes
 * (or the disk is full), -EMSGSIZE when one record alone is larger than
 * a segment, -EAGAIN when they need a new segment that cannot be created
 * just now (the next append that needs one tries again), -EIO after an
 * I/O error (after a failed fdatasync the spool refuses every later
 * append: an fsync that failed cannot be trusted). */
int spool_append(struct spool *s, const struct spool_rec *recs, size_t n);

/* Records appended and not yet committed as drained. */
uint64_t spool_pending(struct spool *s);
/* True when an append of `bytes` more bytes would be accepted now.  If
 * that needs a new segment whose creation failed before, it tries to
 * create it again (so readiness recovers without traffic). */
bool spool_has_room(struct spool *s, uint64_t bytes);
void spool_stats(struct spool *s, struct spool_stats *st);

/* Blocks until records wait to be drained, spool_wake() is called or
 * timeout_ms passes.  Returns true if records wait. */
bool spool_wait(struct spool *s, int timeout_ms);
/* Wakes every spool_wait() (used at shutdown). */
void spool_wake(struct spool *s);

/* Reads, from the drained position on, up to max_recs records and about
 * max_bytes bytes (at least one record) of durable records, all from one
 * segment.  Returns the number read (0: nothing durable to drain), or a
 * negative errno.  b must be zeroed before its first use. */
int spool_read(struct spool *s, struct spool_batch *b, size_t max_recs, size_t max_bytes);
/* Frees a batch's storage. */
void spool_batch_release(struct spool_batch *b);
/* Marks everything up to `end` (a position from the last spool_read, and
 * the number of records before it that were read in that call) as drained:
 * writes the checkpoint durably, then deletes segments left behind. */
int spool_commit(struct spool *s, const struct spool_pos *end, size_t nrecs);

/* CRC-32C (Castagnoli) of buf, continuing from crc (start with 0). */
uint32_t spool_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
