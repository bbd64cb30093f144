/* spool.c - the producer's on-disk write-ahead spool (format in spool.h).
 *
 * Appends.  Each append encodes its records into one buffer and, under the
 * spool's mutex, writes it at the end of the active segment with pwrite().
 * It then waits until an fdatasync() covering its bytes has finished.  The
 * first appender that finds no sync in progress becomes the leader: it
 * notes how far the file has been written, drops the mutex, syncs, and
 * publishes the new durable length; every appender whose bytes lie below
 * that length returns.  Appenders that arrive during a sync write their
 * records and wait for the next one, so N concurrent appenders cost about
 * two fdatasyncs, not N (group commit).  Positions are tracked twice: as a
 * byte count since open (written_lsn / synced_lsn, which survives segment
 * changes) and as the durable length of the active file (synced_off, which
 * bounds what the reader may see).
 *
 * Segments.  When the active segment would grow past segment_bytes the
 * appender seals it: it waits until no sync is in flight, syncs the file
 * itself (which makes every byte written so far durable), and creates the
 * next segment (header synced, directory synced).  Sealed segments are
 * immutable until the drain has committed past them and they are deleted.
 * A failed sync breaks the spool; a failed creation does not: the old
 * segment stays active and the next rotation tries again.
 *
 * Reading.  The drain reads from the committed position (head) onwards,
 * never past synced_off in the active segment, so it only ever produces
 * records whose writers were (or are about to be) answered 202.  A commit
 * first writes the checkpoint (temporary file, fdatasync, rename, directory
 * fsync), then deletes the segments behind it; a crash between the two
 * leaves segments older than the checkpoint, which the next open deletes.
 * When everything is drained the active segment is sealed and deleted too,
 * so an idle spool holds one empty segment.
 *
 * Recovery.  spool_open() deletes segments older than the checkpoint,
 * validates every record after it and truncates each file at its first
 * invalid record.  A record's length is checked against the format's
 * limit (REC_LEN_LIMIT), never against today's segment_bytes: segments
 * written under a larger setting hold larger records, all of them valid.  Records of a segment are written in order and a writer
 * is answered only after the fdatasync covering them, so a bad record can
 * only be a torn tail whose writer got no 202 (or corruption, logged). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "logpipe/log.h"
#include "logpipe/metrics.h"
#include "logpipe/util.h"
#include "spool.h"

#include "logpipe/banned.h"

#define SEG_MAGIC "LPSPOOL2"    /* records with headers (new segments) */
#define SEG_MAGIC_V1 "LPSPOOL1" /* records without headers (read only) */
#define CKP_MAGIC "LPSPCKP1"
#define CKP_SIZE 28u
#define CKP_NAME "checkpoint"
#define CKP_TMP "checkpoint.tmp"
#define LOCK_NAME "LOCK"
#define SCAN_CHUNK (1u << 20) /* bytes read at a time when recovering */

/* One segment file. */
struct seg {
	uint64_t seq;  /* its number (file name) */
	uint64_t size; /* bytes in the file, header included */
	int ver;       /* record format: 2 (headers), or 1 (older segments) */
};

struct spool {
	char *dir;                 /* the spool directory (owned) */
	int dirfd;                 /* open on dir, for *at() calls and directory fsync */
	int lockfd;                /* LOCK, flock()ed while open */
	uint64_t max_bytes;        /* bound on bytes */
	uint64_t segment_bytes;    /* seal a segment before it passes this */

	pthread_mutex_t mu;        /* guards everything below */
	pthread_cond_t synced_cv;  /* an fdatasync finished (appenders wait on it) */
	pthread_cond_t data_cv;    /* durable records appeared, or spool_wake() */

	struct seg *segs;          /* live segments, oldest first; the last is active */
	size_t nsegs;              /* entries in segs */
	size_t segcap;             /* room in segs */
	int wfd;                   /* the active segment, open for writing */
	uint64_t synced_off;       /* durable length of the active segment */
	uint64_t written_lsn;      /* bytes appended since open */
	uint64_t synced_lsn;       /* of which known durable */
	int syncing;               /* a leader is in fdatasync */
	int broken;                /* an I/O error: refuse appends */
	int seg_err;               /* -errno of the last failed segment creation, 0 after a
	                            * success: appends that need a segment retry it */
	unsigned wakes;            /* bumped by spool_wake() */

	struct spool_pos head;     /* drained up to here */
	uint64_t bytes;            /* sum of segs[].size */
	uint64_t events;           /* records not yet drained */
	uint64_t written_total;    /* records appended since open */
	uint64_t drained_total;    /* records drained since open */
	uint64_t fsyncs_total;     /* fdatasyncs made for appends */
	uint64_t recovered;        /* records found at open */
	uint64_t discarded;        /* bytes cut off at open */

	int rfd;                   /* reader's descriptor (reader thread only) */
	uint64_t rseq;             /* segment rfd is open on */

	struct lp_series *m_bytes;    /* logpipe_spool_bytes */
	struct lp_series *m_events;   /* logpipe_spool_events */
	struct lp_series *m_written;  /* logpipe_spool_written_total */
	struct lp_series *m_drained;  /* logpipe_spool_drained_total */
	struct lp_series *m_fsyncs;   /* logpipe_spool_fsyncs_total */
};

/* ---- CRC-32C and little-endian helpers ------------------------------------ */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	uint32_t i, j, c;

	for (i = 0; i < 256; i++) {
		c = i;
		for (j = 0; j < 8; j++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[0][i] = c;
	}
	for (i = 0; i < 256; i++)
		for (j = 1; j < 8; j++)
			crc_table[j][i] = (crc_table[j - 1][i] >> 8) ^
					  crc_table[0][crc_table[j - 1][i] & 0xff];
}

/* Slicing-by-8: eight table lookups per eight bytes. */
uint32_t spool_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint32_t c = ~crc;

	pthread_once(&crc_once, crc_init);
	while (len >= 8) {
		uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
				   (uint32_t)p[3] << 24);
		c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
		    crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
		    crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]] ^
		    crc_table[0][p[7]];
		p += 8;
		len -= 8;
	}
	while (len--)
		c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
	return ~c;
}

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

static void put64(unsigned char *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* ---- small file helpers --------------------------------------------------- */

static void seg_name(uint64_t seq, char out[32])
{
	snprintf(out, 32, "%020" PRIu64 ".seg", seq);
}

/* Parses a segment file name; returns 0 and sets *seq, or -1. */
static int seg_parse(const char *name, uint64_t *seq)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 20; i++) {
		if (name[i] < '0' || name[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(name[i] - '0');
	}
	if (strcmp(name + 20, ".seg") != 0)
		return -1;
	*seq = v;
	return 0;
}

static int pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;
	ssize_t w;

	while (len > 0) {
		w = pwrite(fd, p, len, (off_t)off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		len -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

/* Reads up to len bytes at off; returns the count read (short at EOF) or -errno. */
static ssize_t pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;
	size_t got = 0;
	ssize_t r;

	while (got < len) {
		r = pread(fd, p + got, len - got, (off_t)(off + got));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

static int mkdir_p(const char *path)
{
	char tmp[4096];
	size_t len = lp_strlcpy(tmp, path, sizeof(tmp));
	char *p;

	if (len >= sizeof(tmp))
		return -ENAMETOOLONG;
	for (p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* ---- records -------------------------------------------------------------- */

/*
 * Walks a header block of len bytes (u32 namelen, name, u32 vallen, value,
 * repeated).  Returns the number of headers, filling out[] when out is not
 * NULL, or -1 when the block is malformed.
 */
static long hdrs_walk(const unsigned char *p, uint64_t len, struct spool_hdr *out)
{
	uint64_t pos = 0, nl, vl;
	long n = 0;

	while (pos < len) {
		if (len - pos < 8)
			return -1;
		nl = get32(p + pos);
		if (nl > len - pos - 8)
			return -1;
		vl = get32(p + pos + 4 + nl);
		if (vl > len - pos - 8 - nl)
			return -1;
		if (out) {
			out[n].name = (const char *)p + pos + 4;
			out[n].namelen = (size_t)nl;
			out[n].val = (const char *)p + pos + 8 + nl;
			out[n].vallen = (size_t)vl;
		}
		pos += 8 + nl + vl;
		n++;
	}
	return n;
}

/*
 * The layout of a checked record's body (after len and crc) in format ver:
 * where its header block and value start.  The body is known to be valid.
 */
static void rec_layout(const unsigned char *p, int ver, uint64_t *hdroff, uint64_t *hdrlen,
		       uint64_t *valoff)
{
	uint64_t keylen = get32(p + 8);

	if (ver == 1) {
		*hdroff = 12 + keylen;
		*hdrlen = 0;
	} else {
		*hdroff = 16 + keylen;
		*hdrlen = get32(p + 12 + keylen);
	}
	*valoff = *hdroff + *hdrlen;
}

/*
 * Checks the record starting at p, of which avail bytes are at hand, in
 * record format ver (1 or 2).  Returns its whole size when it is complete
 * and valid, 0 when more bytes are needed (*need says how many in all), -1
 * when it is invalid.
 */
static long long rec_check(const unsigned char *p, size_t avail, uint64_t max_len, int ver,
			   size_t *need)
{
	uint32_t len, keylen;

	*need = 8;
	if (avail < 8)
		return 0;
	len = get32(p);
	if (len < 4 || len > max_len)
		return -1;
	*need = 8 + (size_t)len;
	if (avail < *need)
		return 0;
	keylen = get32(p + 8);
	if (keylen > len - 4)
		return -1;
	if (spool_crc32c(spool_crc32c(0, p, 4), p + 8, len) != get32(p + 4))
		return -1;
	if (ver != 1) {
		uint64_t hdrlen;

		if ((uint64_t)keylen + 8 > len)
			return -1;
		hdrlen = get32(p + 12 + keylen);
		if (hdrlen > (uint64_t)len - 8 - keylen ||
		    hdrs_walk(p + 16 + keylen, hdrlen, NULL) < 0)
			return -1;
	}
	return (long long)*need;
}

/* The bytes of a record's header block. */
static uint64_t hdrs_size(const struct spool_rec *r)
{
	uint64_t n = 0;

	for (size_t i = 0; i < r->nhdrs; i++)
		n += 8 + (uint64_t)r->hdrs[i].namelen + r->hdrs[i].vallen;
	return n;
}

/* The len field of a record, as written (format 2). */
static uint64_t rec_len(const struct spool_rec *r)
{
	return 8 + (uint64_t)r->keylen + hdrs_size(r) + r->vallen;
}

/* The largest len field a new record may carry in a segment of this spool. */
static uint64_t max_rec_len(const struct spool *s)
{
	return s->segment_bytes - SPOOL_SEG_HEADER - 8;
}

/* The largest len field any record on disk may carry: records written with
 * a larger spool.segment_bytes than today's are still valid. */
#define REC_LEN_LIMIT (SPOOL_SEG_MAX - SPOOL_SEG_HEADER - 8)

/* Writes r at p in format 2 (rec_len(r) + 8 bytes); returns the bytes written. */
static size_t rec_encode(unsigned char *p, const struct spool_rec *r)
{
	uint32_t len = (uint32_t)rec_len(r);
	size_t pos = 12;

	put32(p, len);
	put32(p + 8, (uint32_t)r->keylen);
	if (r->keylen)
		memcpy(p + pos, r->key, r->keylen);
	pos += r->keylen;
	put32(p + pos, (uint32_t)hdrs_size(r));
	pos += 4;
	for (size_t i = 0; i < r->nhdrs; i++) {
		const struct spool_hdr *h = &r->hdrs[i];

		put32(p + pos, (uint32_t)h->namelen);
		if (h->namelen)
			memcpy(p + pos + 4, h->name, h->namelen);
		pos += 4 + h->namelen;
		put32(p + pos, (uint32_t)h->vallen);
		if (h->vallen)
			memcpy(p + pos + 4, h->val, h->vallen);
		pos += 4 + h->vallen;
	}
	if (r->vallen)
		memcpy(p + pos, r->val, r->vallen);
	put32(p + 4, spool_crc32c(spool_crc32c(0, p, 4), p + 8, len));
	return 8 + (size_t)len;
}

/* ---- metrics -------------------------------------------------------------- */

/* Publishes the gauges; called with mu held after any change. */
static void gauges_locked(struct spool *s)
{
	if (s->m_bytes) {
		lp_series_set(s->m_bytes, (double)s->bytes);
		lp_series_set(s->m_events, (double)s->events);
	}
}

/* ---- segments ------------------------------------------------------------- */

static void segs_push(struct spool *s, uint64_t seq, uint64_t size, int ver)
{
	if (s->nsegs == s->segcap) {
		s->segcap = s->segcap ? s->segcap * 2 : 8;
		s->segs = lp_xrealloc(s->segs, s->segcap * sizeof(*s->segs));
	}
	s->segs[s->nsegs].seq = seq;
	s->segs[s->nsegs].size = size;
	s->segs[s->nsegs].ver = ver;
	s->nsegs++;
	s->bytes += size;
}

/* Removes segs[0] and its file. */
static void segs_drop_first(struct spool *s)
{
	char name[32];

	seg_name(s->segs[0].seq, name);
	if (s->rfd >= 0 && s->rseq == s->segs[0].seq) {
		close(s->rfd);
		s->rfd = -1;
	}
	if (unlinkat(s->dirfd, name, 0) < 0 && errno != ENOENT)
		lp_warn("spool: cannot delete \"%s/%s\": %s", s->dir, name, strerror(errno));
	s->bytes -= s->segs[0].size;
	memmove(s->segs, s->segs + 1, (s->nsegs - 1) * sizeof(*s->segs));
	s->nsegs--;
}

/* Creates segment seq (header written and synced, directory synced) and
 * makes it the active one.  Returns 0 or -errno. */
static int seg_create(struct spool *s, uint64_t seq)
{
	unsigned char hdr[SPOOL_SEG_HEADER];
	char name[32];
	int fd, ret;

	seg_name(seq, name);
	fd = openat(s->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	memcpy(hdr, SEG_MAGIC, 8);
	put64(hdr + 8, seq);
	ret = pwrite_full(fd, hdr, sizeof(hdr), 0);
	if (ret == 0 && fdatasync(fd) < 0)
		ret = -errno;
	if (ret == 0 && fsync(s->dirfd) < 0)
		ret = -errno;
	if (ret < 0) {
		close(fd);
		unlinkat(s->dirfd, name, 0);
		return ret;
	}
	if (s->wfd >= 0)
		close(s->wfd);
	s->wfd = fd;
	s->synced_off = SPOOL_SEG_HEADER;
	segs_push(s, seq, SPOOL_SEG_HEADER, 2);
	return 0;
}

/*
 * Seals the active segment and starts the next one.  Called with mu held
 * and no sync in flight.  Everything written so far becomes durable.
 *
 * A failed fdatasync breaks the spool for good: what the kernel dropped
 * cannot be known.  A failed creation of the next segment (a full disk for
 * a moment) only fails this call: the sealed segment is still the active
 * one, and the next append that needs room, or spool_has_room(), tries
 * again; s->seg_err says so until a creation succeeds.
 */
static int seg_rotate_locked(struct spool *s)
{
	int ret;

	if (fdatasync(s->wfd) < 0) {
		ret = -errno;
		lp_error("spool: fdatasync in \"%s\" failed: %s; refusing appends", s->dir,
			 strerror(-ret));
		s->broken = 1;
		pthread_cond_broadcast(&s->synced_cv);
		return ret;
	}
	s->fsyncs_total++;
	if (s->m_fsyncs)
		lp_series_inc(s->m_fsyncs);
	s->synced_lsn = s->written_lsn;
	/* The reader may see all of it even if no segment follows. */
	s->synced_off = s->segs[s->nsegs - 1].size;
	pthread_cond_broadcast(&s->synced_cv);
	pthread_cond_broadcast(&s->data_cv);
	ret = seg_create(s, s->segs[s->nsegs - 1].seq + 1);
	if (ret < 0) {
		if (s->seg_err == 0)
			lp_error("spool: cannot start a new segment in \"%s\": %s; appends that "
				 "need one fail until it can be created",
				 s->dir, strerror(-ret));
		s->seg_err = ret;
		return ret;
	}
	if (s->seg_err != 0) {
		lp_info("spool: a new segment could be created in \"%s\" again", s->dir);
		s->seg_err = 0;
	}
	return 0;
}

/* ---- checkpoint ----------------------------------------------------------- */

static int ckp_read(struct spool *s, struct spool_pos *pos)
{
	unsigned char b[CKP_SIZE];
	int fd = openat(s->dirfd, CKP_NAME, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	pos->seg = 0;
	pos->off = 0;
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	n = pread_full(fd, b, sizeof(b), 0);
	close(fd);
	if (n != (ssize_t)sizeof(b) || memcmp(b, CKP_MAGIC, 8) != 0 ||
	    spool_crc32c(0, b, 24) != get32(b + 24)) {
		/* Starting over from the oldest segment only duplicates. */
		lp_warn("spool: ignoring invalid checkpoint in \"%s\"", s->dir);
		return 0;
	}
	pos->seg = get64(b + 8);
	pos->off = get64(b + 16);
	return 0;
}

static int ckp_write(struct spool *s, const struct spool_pos *pos)
{
	unsigned char b[CKP_SIZE];
	int fd, ret = 0;

	memcpy(b, CKP_MAGIC, 8);
	put64(b + 8, pos->seg);
	put64(b + 16, pos->off);
	put32(b + 24, spool_crc32c(0, b, 24));
	fd = openat(s->dirfd, CKP_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	ret = pwrite_full(fd, b, sizeof(b), 0);
	if (ret == 0 && fdatasync(fd) < 0)
		ret = -errno;
	close(fd);
	if (ret == 0 && renameat(s->dirfd, CKP_TMP, s->dirfd, CKP_NAME) < 0)
		ret = -errno;
	if (ret == 0 && fsync(s->dirfd) < 0)
		ret = -errno;
	return ret;
}

/* ---- open and recovery ---------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Validates the records of segment seq from offset start on, cuts the file
 * at the first invalid one, and reports the valid length and the number of
 * records after start.  Returns 0, 1 if the file is not a segment at all
 * (too short to hold a header: a creation cut by a crash), or -errno.
 */
static int seg_recover(struct spool *s, uint64_t seq, uint64_t start, uint64_t *valid_end,
		       uint64_t *count, int *ver, char *err, size_t errlen)
{
	unsigned char hdr[SPOOL_SEG_HEADER];
	unsigned char *buf = NULL;
	size_t cap = SCAN_CHUNK, need;
	char name[32];
	struct stat st;
	uint64_t off, n = 0;
	int fd, ret = 0;

	seg_name(seq, name);
	fd = openat(s->dirfd, name, O_RDWR | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot open \"%s/%s\": %s", s->dir, name, strerror(errno));
		goto out;
	}
	if ((uint64_t)st.st_size < SPOOL_SEG_HEADER) {
		ret = 1;
		goto out;
	}
	if (pread_full(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) ||
	    (memcmp(hdr, SEG_MAGIC, 8) != 0 && memcmp(hdr, SEG_MAGIC_V1, 8) != 0) ||
	    get64(hdr + 8) != seq) {
		ret = -EINVAL;
		snprintf(err, errlen, "\"%s/%s\" is not a spool segment", s->dir, name);
		goto out;
	}
	*ver = memcmp(hdr, SEG_MAGIC_V1, 8) == 0 ? 1 : 2;
	off = start < SPOOL_SEG_HEADER ? SPOOL_SEG_HEADER : start;
	if (off > (uint64_t)st.st_size)
		off = (uint64_t)st.st_size;
	if ((uint64_t)cap > (uint64_t)st.st_size - off + 8)
		cap = (size_t)((uint64_t)st.st_size - off + 8); /* small files, small buffer */
	buf = lp_xmalloc(cap);
	while (off < (uint64_t)st.st_size) {
		size_t want = cap, pos = 0;
		ssize_t got;
		long long r = 0;

		if ((uint64_t)want > (uint64_t)st.st_size - off)
			want = (size_t)((uint64_t)st.st_size - off);
		got = pread_full(fd, buf, want, off);
		if (got < 0) {
			ret = (int)got;
			snprintf(err, errlen, "cannot read \"%s/%s\": %s", s->dir, name,
				 strerror((int)-got));
			goto out;
		}
		while ((r = rec_check(buf + pos, (size_t)got - pos, REC_LEN_LIMIT, *ver, &need)) > 0) {
			pos += (size_t)r;
			n++;
		}
		off += pos;
		if (r < 0)
			break; /* invalid record */
		if (pos == 0) {
			/* A torn record, or one larger than the buffer: read it whole. */
			if ((uint64_t)need > (uint64_t)st.st_size - off || (size_t)got < want ||
			    need <= cap)
				break;
			cap = need;
			buf = lp_xrealloc(buf, cap);
		}
	}
	if (off < (uint64_t)st.st_size) {
		lp_warn("spool: \"%s/%s\": discarding %" PRIu64 " bytes after offset %" PRIu64
			" (torn or corrupt record)",
			s->dir, name, (uint64_t)st.st_size - off, off);
		s->discarded += (uint64_t)st.st_size - off;
		if (ftruncate(fd, (off_t)off) < 0 || fdatasync(fd) < 0) {
			ret = -errno;
			snprintf(err, errlen, "cannot truncate \"%s/%s\": %s", s->dir, name,
				 strerror(errno));
			goto out;
		}
	}
	*valid_end = off;
	*count = n;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return ret;
}

static int recover(struct spool *s, char *err, size_t errlen)
{
	struct spool_pos ckp;
	uint64_t *seqs = NULL, last = 0;
	size_t nseqs = 0, cap = 0, i;
	struct dirent *de;
	DIR *d;
	int dfd, ret;

	ret = ckp_read(s, &ckp);
	if (ret < 0) {
		snprintf(err, errlen, "cannot read the checkpoint in \"%s\": %s", s->dir,
			 strerror(-ret));
		return ret;
	}
	dfd = dup(s->dirfd);
	d = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!d) {
		ret = -errno;
		if (dfd >= 0)
			close(dfd);
		snprintf(err, errlen, "cannot list \"%s\": %s", s->dir, strerror(-ret));
		return ret;
	}
	rewinddir(d);
	while ((de = readdir(d)) != NULL) {
		uint64_t seq;

		if (seg_parse(de->d_name, &seq) < 0)
			continue;
		if (nseqs == cap) {
			cap = cap ? cap * 2 : 16;
			seqs = lp_xrealloc(seqs, cap * sizeof(*seqs));
		}
		seqs[nseqs++] = seq;
	}
	closedir(d);
	if (nseqs)
		qsort(seqs, nseqs, sizeof(*seqs), cmp_u64);

	for (i = 0; i < nseqs; i++) {
		uint64_t end = 0, count = 0, start;
		char name[32];
		int ver = 2;

		seg_name(seqs[i], name);
		if (seqs[i] > last)
			last = seqs[i];
		if (seqs[i] < ckp.seg) {
			unlinkat(s->dirfd, name, 0); /* drained before the crash */
			continue;
		}
		start = seqs[i] == ckp.seg ? ckp.off : SPOOL_SEG_HEADER;
		ret = seg_recover(s, seqs[i], start, &end, &count, &ver, err, errlen);
		if (ret < 0)
			goto out;
		if (ret == 1 || count == 0) {
			/* Nothing left to drain in it. */
			unlinkat(s->dirfd, name, 0);
			continue;
		}
		if (s->nsegs == 0) {
			s->head.seg = seqs[i];
			s->head.off = start < SPOOL_SEG_HEADER ? SPOOL_SEG_HEADER : start;
		}
		segs_push(s, seqs[i], end, ver);
		s->events += count;
	}
	s->recovered = s->events;
	if (last < ckp.seg)
		last = ckp.seg;
	/* A fresh active segment, numbered after everything seen, so the
	 * checkpoint can never make it look drained. */
	ret = seg_create(s, last + 1);
	if (ret < 0) {
		snprintf(err, errlen, "cannot create a segment in \"%s\": %s", s->dir,
			 strerror(-ret));
		goto out;
	}
	if (s->nsegs == 1) {
		s->head.seg = last + 1;
		s->head.off = SPOOL_SEG_HEADER;
	}
	ret = fsync(s->dirfd) < 0 ? -errno : 0;
out:
	free(seqs);
	return ret;
}

struct spool *spool_open(const struct spool_opts *o, char *err, size_t errlen)
{
	struct spool *s;
	pthread_condattr_t ca;
	int ret;

	if (!o || !o->dir || !*o->dir) {
		snprintf(err, errlen, "spool: no directory given");
		return NULL;
	}
	if (o->segment_bytes < 64 || o->segment_bytes > SPOOL_SEG_MAX ||
	    o->max_bytes < o->segment_bytes) {
		snprintf(err, errlen,
			 "spool: segment size %" PRIu64 " must be at least 64, at most %" PRIu64
			 " and at most the bound %" PRIu64,
			 o->segment_bytes, SPOOL_SEG_MAX, o->max_bytes);
		return NULL;
	}
	s = lp_xcalloc(1, sizeof(*s));
	s->dir = lp_xstrdup(o->dir);
	s->dirfd = s->lockfd = s->wfd = s->rfd = -1;
	s->max_bytes = o->max_bytes;
	s->segment_bytes = o->segment_bytes;
	pthread_mutex_init(&s->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->synced_cv, &ca);
	pthread_cond_init(&s->data_cv, &ca);
	pthread_condattr_destroy(&ca);

	ret = mkdir_p(o->dir);
	if (ret < 0) {
		snprintf(err, errlen, "cannot create spool directory \"%s\": %s", o->dir,
			 strerror(-ret));
		goto fail;
	}
	s->dirfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dirfd < 0) {
		snprintf(err, errlen, "cannot open spool directory \"%s\": %s", o->dir,
			 strerror(errno));
		goto fail;
	}
	s->lockfd = openat(s->dirfd, LOCK_NAME, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (s->lockfd < 0 || flock(s->lockfd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			snprintf(err, errlen, "spool directory \"%s\" is in use by another process",
				 o->dir);
		else
			snprintf(err, errlen, "cannot lock spool directory \"%s\": %s", o->dir,
				 strerror(errno));
		goto fail;
	}
	if (recover(s, err, errlen) < 0)
		goto fail;
	s->written_lsn = s->synced_lsn = 0;
	if (o->metrics) {
		s->m_bytes = lp_gauge(o->metrics, "logpipe_spool_bytes",
				      "Bytes of the producer's spool segment files");
		s->m_events = lp_gauge(o->metrics, "logpipe_spool_events",
				       "Events in the producer's spool waiting for Kafka");
		s->m_written = lp_counter(o->metrics, "logpipe_spool_written_total",
					  "Events written to the spool (answered 202 from it)");
		s->m_drained = lp_counter(o->metrics, "logpipe_spool_drained_total",
					  "Spooled events acknowledged by Kafka and drained");
		s->m_fsyncs = lp_counter(o->metrics, "logpipe_spool_fsyncs_total",
					 "fdatasync calls made by spool appends (group commit)");
		gauges_locked(s);
	}
	if (s->events)
		lp_info("spool: \"%s\" holds %" PRIu64 " events (%" PRIu64 " bytes) to drain",
			s->dir, s->events, s->bytes);
	return s;
fail:
	spool_close(s);
	return NULL;
}

void spool_close(struct spool *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	while (s->syncing)
		pthread_cond_wait(&s->synced_cv, &s->mu);
	if (s->wfd >= 0) {
		if (!s->broken && s->written_lsn != s->synced_lsn && fdatasync(s->wfd) < 0)
			lp_error("spool: final sync of \"%s\" failed: %s", s->dir, strerror(errno));
		close(s->wfd);
	}
	pthread_mutex_unlock(&s->mu);
	if (s->rfd >= 0)
		close(s->rfd);
	if (s->lockfd >= 0)
		close(s->lockfd); /* releases the flock */
	if (s->dirfd >= 0)
		close(s->dirfd);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->synced_cv);
	pthread_cond_destroy(&s->data_cv);
	free(s->segs);
	free(s->dir);
	free(s);
}

/* ---- appends -------------------------------------------------------------- */

/* Waits, mu held, until the bytes up to lsn are durable, leading a sync when
 * none is in flight.  Returns 0 or -EIO. */
static int sync_upto_locked(struct spool *s, uint64_t lsn)
{
	while (s->synced_lsn < lsn && !s->broken) {
		uint64_t target, toff;
		int fd, r;

		if (s->syncing) {
			pthread_cond_wait(&s->synced_cv, &s->mu);
			continue;
		}
		s->syncing = 1;
		target = s->written_lsn;
		toff = s->segs[s->nsegs - 1].size;
		fd = s->wfd;
		pthread_mutex_unlock(&s->mu);
		r = fdatasync(fd);
		pthread_mutex_lock(&s->mu);
		s->syncing = 0;
		s->fsyncs_total++;
		if (s->m_fsyncs)
			lp_series_inc(s->m_fsyncs);
		if (r < 0) {
			lp_error("spool: fdatasync in \"%s\" failed: %s; refusing appends", s->dir,
				 strerror(errno));
			s->broken = 1;
		} else {
			/* No rotation can run while syncing, so fd is still active. */
			s->synced_lsn = target;
			s->synced_off = toff;
		}
		pthread_cond_broadcast(&s->synced_cv);
		pthread_cond_broadcast(&s->data_cv);
	}
	return s->synced_lsn >= lsn ? 0 : -EIO;
}

int spool_append(struct spool *s, const struct spool_rec *recs, size_t n)
{
	unsigned char *buf = NULL;
	size_t total = 0, pos = 0, i;
	uint64_t off, lsn;
	struct seg *act;
	int ret = 0;

	if (n == 0)
		return 0;
	for (i = 0; i < n; i++) {
		uint64_t len = rec_len(&recs[i]);

		if (len > max_rec_len(s))
			return -EMSGSIZE;
		total += 8 + (size_t)len;
	}
	buf = lp_xmalloc(total);
	for (i = 0; i < n; i++)
		pos += rec_encode(buf + pos, &recs[i]);

	pthread_mutex_lock(&s->mu);
	for (;;) {
		if (s->broken) {
			ret = -EIO;
			goto out;
		}
		act = &s->segs[s->nsegs - 1];
		if (s->bytes + total > s->max_bytes) {
			ret = -ENOSPC;
			goto out;
		}
		if (act->size + total <= s->segment_bytes || act->size == SPOOL_SEG_HEADER)
			break;
		/* Seal the active segment; wait for an in-flight sync first. */
		if (s->syncing) {
			pthread_cond_wait(&s->synced_cv, &s->mu);
			continue;
		}
		ret = seg_rotate_locked(s);
		if (ret < 0) {
			/* A segment not created is retried by the next append. */
			ret = s->broken ? -EIO
			      : ret == -ENOSPC || ret == -EDQUOT ? -ENOSPC
								 : -EAGAIN;
			goto out;
		}
		if (s->bytes + total > s->max_bytes) {
			ret = -ENOSPC;
			goto out;
		}
	}
	off = act->size;
	ret = pwrite_full(s->wfd, buf, total, off);
	if (ret < 0) {
		/* Take back whatever part landed, so the file stays well-formed. */
		if (ftruncate(s->wfd, (off_t)off) < 0) {
			lp_error("spool: cannot undo a failed write in \"%s\": %s", s->dir,
				 strerror(errno));
			s->broken = 1;
		}
		lp_warn("spool: write to \"%s\" failed: %s", s->dir, strerror(-ret));
		ret = ret == -ENOSPC || ret == -EDQUOT ? -ENOSPC : -EIO;
		goto out;
	}
	act->size += total;
	s->bytes += total;
	s->events += n;
	s->written_total += n;
	s->written_lsn += total;
	lsn = s->written_lsn;
	gauges_locked(s);
	if (s->m_written)
		lp_series_add(s->m_written, (double)n);
	ret = sync_upto_locked(s, lsn);
out:
	pthread_mutex_unlock(&s->mu);
	free(buf);
	return ret;
}

/* ---- state ---------------------------------------------------------------- */

uint64_t spool_pending(struct spool *s)
{
	uint64_t n;

	pthread_mutex_lock(&s->mu);
	n = s->events;
	pthread_mutex_unlock(&s->mu);
	return n;
}

bool spool_has_room(struct spool *s, uint64_t bytes)
{
	const struct seg *act;
	bool ok;

	pthread_mutex_lock(&s->mu);
	ok = !s->broken && s->bytes + bytes <= s->max_bytes;
	act = &s->segs[s->nsegs - 1];
	if (ok && s->seg_err != 0 && act->size + bytes > s->segment_bytes &&
	    act->size != SPOOL_SEG_HEADER) {
		/* Such an append needs the segment that could not be created:
		 * try again now, so that readiness comes back once the disk has
		 * room even when no request arrives meanwhile. */
		ok = !s->syncing && seg_rotate_locked(s) == 0;
	}
	pthread_mutex_unlock(&s->mu);
	return ok;
}

void spool_stats(struct spool *s, struct spool_stats *st)
{
	pthread_mutex_lock(&s->mu);
	st->bytes = s->bytes;
	st->events = s->events;
	st->max_bytes = s->max_bytes;
	st->segments = s->nsegs;
	st->written_total = s->written_total;
	st->drained_total = s->drained_total;
	st->fsyncs_total = s->fsyncs_total;
	st->recovered = s->recovered;
	st->discarded_bytes = s->discarded;
	st->broken = s->broken != 0;
	st->seg_errno = -s->seg_err;
	pthread_mutex_unlock(&s->mu);
}

/*
 * Finds, mu held, the first durable bytes after head: the segment, where
 * to start in it, the durable end and the segment's record format.
 * Returns false if there are none.
 */
static bool durable_span_locked(struct spool *s, uint64_t *seq, uint64_t *start, uint64_t *end,
				int *ver)
{
	size_t i;

	for (i = 0; i < s->nsegs; i++) {
		const struct seg *g = &s->segs[i];
		uint64_t a, b;

		if (g->seq < s->head.seg)
			continue;
		a = g->seq == s->head.seg ? s->head.off : SPOOL_SEG_HEADER;
		b = i == s->nsegs - 1 ? s->synced_off : g->size;
		if (b > a) {
			*seq = g->seq;
			*start = a;
			*end = b;
			*ver = g->ver;
			return true;
		}
	}
	return false;
}

bool spool_wait(struct spool *s, int timeout_ms)
{
	struct timespec ts;
	uint64_t a, b, c;
	unsigned wakes;
	bool ready;
	int ver;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&s->mu);
	wakes = s->wakes;
	while (!(ready = durable_span_locked(s, &a, &b, &c, &ver)) && wakes == s->wakes) {
		if (pthread_cond_timedwait(&s->data_cv, &s->mu, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&s->mu);
	return ready;
}

void spool_wake(struct spool *s)
{
	pthread_mutex_lock(&s->mu);
	s->wakes++;
	pthread_cond_broadcast(&s->data_cv);
	pthread_mutex_unlock(&s->mu);
}

/* ---- reading -------------------------------------------------------------- */

void spool_batch_release(struct spool_batch *b)
{
	free(b->recs);
	free(b->ends);
	free(b->buf);
	free(b->hdrs);
	memset(b, 0, sizeof(*b));
}

static void batch_reserve(struct spool_batch *b, size_t bytes)
{
	if (bytes > b->bufcap) {
		free(b->buf);
		b->buf = lp_xmalloc(bytes);
		b->bufcap = bytes;
	}
}

int spool_read(struct spool *s, struct spool_batch *b, size_t max_recs, size_t max_bytes)
{
	uint64_t seq, start, end;
	size_t want, need = 0, pos = 0;
	ssize_t got;
	long long r = 0;
	char name[32];
	int ver;

	b->n = 0;
	if (max_recs == 0)
		max_recs = 1;
	pthread_mutex_lock(&s->mu);
	if (!durable_span_locked(s, &seq, &start, &end, &ver)) {
		b->end = s->head;
		pthread_mutex_unlock(&s->mu);
		return 0;
	}
	pthread_mutex_unlock(&s->mu);

	if (s->rfd < 0 || s->rseq != seq) {
		if (s->rfd >= 0)
			close(s->rfd);
		seg_name(seq, name);
		s->rfd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC);
		if (s->rfd < 0) {
			lp_error("spool: cannot open \"%s/%s\": %s", s->dir, name, strerror(errno));
			return -errno;
		}
		s->rseq = seq;
	}
	want = max_bytes < 64 ? 64 : max_bytes;
	if ((uint64_t)want > end - start)
		want = (size_t)(end - start);
	for (;;) {
		batch_reserve(b, want);
		got = pread_full(s->rfd, b->buf, want, start);
		if (got < 0)
			return (int)got;
		r = rec_check((unsigned char *)b->buf, (size_t)got, REC_LEN_LIMIT, ver, &need);
		/* The first record is larger than what we read: read it whole. */
		if (r == 0 && need > (size_t)got && (uint64_t)need <= end - start &&
		    (size_t)got == want) {
			want = need;
			continue;
		}
		break;
	}
	b->end.seg = seq;
	b->end.off = start;
	b->nhdrs = 0;
	while (b->n < max_recs &&
	       (r = rec_check((unsigned char *)b->buf + pos, (size_t)got - pos, REC_LEN_LIMIT, ver,
			      &need)) > 0) {
		const unsigned char *p = (unsigned char *)b->buf + pos;
		uint32_t len = get32(p), keylen = get32(p + 8);
		uint64_t hdroff, hdrlen, valoff;
		struct spool_rec *rec;
		long nh;

		if (b->n == b->cap) {
			b->cap = b->cap ? b->cap * 2 : 256;
			b->recs = lp_xrealloc(b->recs, b->cap * sizeof(*b->recs));
			b->ends = lp_xrealloc(b->ends, b->cap * sizeof(*b->ends));
		}
		rec_layout(p, ver, &hdroff, &hdrlen, &valoff);
		nh = hdrs_walk(p + hdroff, hdrlen, NULL); /* >= 0: rec_check walked it */
		if (b->nhdrs + (size_t)nh > b->hdrcap) {
			b->hdrcap = b->nhdrs + (size_t)nh > 2 * b->hdrcap ? b->nhdrs + (size_t)nh
									   : 2 * b->hdrcap;
			b->hdrs = lp_xrealloc(b->hdrs, b->hdrcap * sizeof(*b->hdrs));
		}
		hdrs_walk(p + hdroff, hdrlen, b->hdrs + b->nhdrs);
		b->nhdrs += (size_t)nh;
		rec = &b->recs[b->n];
		rec->key = (const char *)p + 12;
		rec->keylen = keylen;
		rec->val = (const char *)p + valoff;
		rec->vallen = 8 + (size_t)len - (size_t)valoff;
		rec->hdrs = NULL; /* pointed into b->hdrs below, once it stops moving */
		rec->nhdrs = (size_t)nh;
		pos += (size_t)r;
		b->end.off = start + pos;
		b->ends[b->n++] = b->end;
	}
	for (size_t i = 0, h = 0; i < b->n; h += b->recs[i].nhdrs, i++)
		b->recs[i].hdrs = b->recs[i].nhdrs ? b->hdrs + h : NULL;
	if (r < 0 && b->n == 0) {
		/* Durable bytes that do not check: corruption after open.  Skip
		 * the rest of what was durable in that segment. */
		lp_error("spool: corrupt record in segment %" PRIu64 " at offset %" PRIu64
			 "; skipping %" PRIu64 " bytes",
			 seq, start, end - start);
		b->end.off = end;
		return -EBADMSG;
	}
	return (int)b->n;
}

int spool_commit(struct spool *s, const struct spool_pos *end, size_t nrecs)
{
	uint64_t a, b, c;
	int ret, ver;

	ret = ckp_write(s, end);
	if (ret < 0)
		lp_error("spool: cannot write the checkpoint in \"%s\": %s", s->dir,
			 strerror(-ret));
	pthread_mutex_lock(&s->mu);
	s->head = *end;
	s->events -= nrecs < s->events ? nrecs : s->events;
	s->drained_total += nrecs;
	if (s->m_drained && nrecs)
		lp_series_add(s->m_drained, (double)nrecs);
	/* Drop sealed segments behind the head, or that it has reached the end of. */
	while (s->nsegs > 1 && (s->segs[0].seq < s->head.seg ||
				(s->segs[0].seq == s->head.seg && s->head.off >= s->segs[0].size))) {
		segs_drop_first(s);
		if (s->head.seg < s->segs[0].seq) {
			s->head.seg = s->segs[0].seq;
			s->head.off = SPOOL_SEG_HEADER;
		}
	}
	if (!durable_span_locked(s, &a, &b, &c, &ver) && s->written_lsn == s->synced_lsn) {
		/* All drained: start a fresh segment and delete the old one, so
		 * an idle spool does not keep drained bytes on disk. */
		s->events = 0;
		if (!s->syncing && !s->broken && s->segs[s->nsegs - 1].size > SPOOL_SEG_HEADER &&
		    seg_rotate_locked(s) == 0) {
			while (s->nsegs > 1)
				segs_drop_first(s);
			s->head.seg = s->segs[0].seq;
			s->head.off = SPOOL_SEG_HEADER;
		}
	}
	gauges_locked(s);
	pthread_mutex_unlock(&s->mu);
	return ret;
}
