/* test_spool.c - unit tests for the producer's disk spool: the record
 * format, recovery after a crash (torn tail, CRC mismatch, checkpoint),
 * segment deletion after draining, the byte bound and group commit.
 * Each test works in its own temporary directory. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "logpipe/metrics.h"
#include "logpipe/util.h"
#include "../spool.h"

#include "logpipe/banned.h"

/* A temporary spool directory per test. */
struct fixture {
	char dir[64];
	struct spool_opts o;
	struct lp_registry *reg;
};

static int setup(void **state)
{
	struct fixture *f = lp_xcalloc(1, sizeof(*f));

	lp_strlcpy(f->dir, "/tmp/lp-spool-test-XXXXXX", sizeof(f->dir));
	assert_non_null(mkdtemp(f->dir));
	f->reg = lp_registry_new();
	f->o.dir = f->dir;
	f->o.max_bytes = 1 << 20;
	f->o.segment_bytes = 1 << 16;
	f->o.metrics = f->reg;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char path[256];
	struct dirent *de;
	DIR *d = opendir(f->dir);

	while (d && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", f->dir, de->d_name);
		unlink(path);
	}
	if (d)
		closedir(d);
	rmdir(f->dir);
	lp_registry_free(f->reg);
	free(f);
	return 0;
}

/* The value of event i: distinct, of varying length. */
static void value_of(int i, char *out, size_t len)
{
	snprintf(out, len, "{\"id\":\"event-%06d\",\"message\":\"%.*s\"}", i, i % 50,
		 "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz");
}

static int append_one(struct spool *s, int i)
{
	char val[128], key[32];
	struct spool_rec r = { 0 };

	value_of(i, val, sizeof(val));
	snprintf(key, sizeof(key), "svc-%d", i % 3);
	r.key = key;
	r.keylen = strlen(key);
	r.val = val;
	r.vallen = strlen(val);
	return spool_append(s, &r, 1);
}

static void append_range(struct spool *s, int from, int to)
{
	for (int i = from; i < to; i++)
		assert_int_equal(append_one(s, i), 0);
}

/* Reads everything (committing as it goes when commit is true) and checks
 * the values are events from..to-1 in order. */
static void drain_expect(struct spool *s, int from, int to, bool commit)
{
	struct spool_batch b = { 0 };
	char want[128], key[32];
	int next = from, n;

	while ((n = spool_read(s, &b, 7, 300)) > 0) {
		for (int i = 0; i < n; i++, next++) {
			value_of(next, want, sizeof(want));
			snprintf(key, sizeof(key), "svc-%d", next % 3);
			assert_int_equal(b.recs[i].vallen, strlen(want));
			assert_memory_equal(b.recs[i].val, want, strlen(want));
			assert_int_equal(b.recs[i].keylen, strlen(key));
			assert_memory_equal(b.recs[i].key, key, strlen(key));
		}
		if (!commit)
			break;
		assert_int_equal(spool_commit(s, &b.end, (size_t)n), 0);
	}
	assert_true(n >= 0);
	if (commit)
		assert_int_equal(next, to);
	spool_batch_release(&b);
}

static int count_files(const char *dir, const char *suffix)
{
	struct dirent *de;
	DIR *d = opendir(dir);
	int n = 0;
	size_t sl = strlen(suffix);

	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);

		if (l >= sl && !strcmp(de->d_name + l - sl, suffix))
			n++;
	}
	closedir(d);
	return n;
}

/* Path of the newest (or oldest) segment file. */
static void seg_path(const char *dir, bool newest, char *out, size_t len)
{
	struct dirent *de;
	DIR *d = opendir(dir);
	char best[64] = "";

	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		if (!strstr(de->d_name, ".seg"))
			continue;
		if (!best[0] || (newest ? strcmp(de->d_name, best) > 0 : strcmp(de->d_name, best) < 0))
			lp_strlcpy(best, de->d_name, sizeof(best));
	}
	closedir(d);
	assert_true(best[0] != '\0');
	snprintf(out, len, "%s/%s", dir, best);
}

static off_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

static void test_crc32c_vector(void **state)
{
	/* The check value of CRC-32C (RFC 3720, appendix B.4). */
	assert_int_equal(spool_crc32c(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(spool_crc32c(spool_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
	assert_int_equal(spool_crc32c(0, "", 0), 0);
}

static void test_append_read_commit(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";
	struct spool *s = spool_open(&f->o, err, sizeof(err));
	struct spool_stats st;

	assert_non_null(s);
	assert_int_equal(spool_pending(s), 0);
	append_range(s, 0, 100);
	spool_stats(s, &st);
	assert_int_equal(st.events, 100);
	assert_int_equal(st.written_total, 100);
	assert_true(st.bytes > 100 * SPOOL_REC_HEADER);
	assert_int_equal(lp_series_value(lp_gauge(f->reg, "logpipe_spool_events", "")), 100);
	assert_true(spool_wait(s, 0));

	/* Reading without committing, twice, gives the same records. */
	drain_expect(s, 0, 100, false);
	drain_expect(s, 0, 100, false);
	drain_expect(s, 0, 100, true);
	spool_stats(s, &st);
	assert_int_equal(st.events, 0);
	assert_int_equal(st.drained_total, 100);
	assert_int_equal(st.segments, 1);
	assert_int_equal(st.bytes, SPOOL_SEG_HEADER); /* drained bytes are deleted */
	assert_false(spool_wait(s, 10));
	assert_int_equal(lp_series_value(lp_counter(f->reg, "logpipe_spool_drained_total", "")),
			 100);
	assert_int_equal(lp_series_value(lp_gauge(f->reg, "logpipe_spool_bytes", "")),
			 SPOOL_SEG_HEADER);

	/* And it keeps working after a full drain. */
	append_range(s, 100, 110);
	drain_expect(s, 100, 110, true);
	spool_close(s);
}

static void test_reopen_keeps_undrained(void **state)
{
	struct fixture *f = *state;
	struct spool_batch b = { 0 };
	char err[256] = "";
	struct spool *s = spool_open(&f->o, err, sizeof(err));
	struct spool_stats st;
	int n;

	assert_non_null(s);
	append_range(s, 0, 50);
	/* Drain the first 7, then "crash" (close without draining the rest). */
	n = spool_read(s, &b, 7, 1 << 20);
	assert_int_equal(n, 7);
	assert_int_equal(spool_commit(s, &b.end, 7), 0);
	spool_batch_release(&b);
	spool_close(s);

	s = spool_open(&f->o, err, sizeof(err));
	assert_non_null(s);
	spool_stats(s, &st);
	assert_int_equal(st.events, 43);
	assert_int_equal(st.recovered, 43);
	assert_int_equal(st.discarded_bytes, 0);
	append_range(s, 50, 60); /* new events queue behind the recovered ones */
	drain_expect(s, 7, 60, true);
	spool_close(s);

	s = spool_open(&f->o, err, sizeof(err));
	assert_non_null(s);
	assert_int_equal(spool_pending(s), 0);
	spool_close(s);
	/* One empty active segment is all that is left. */
	assert_int_equal(count_files(f->dir, ".seg"), 1);
}

static void test_torn_tail_is_cut(void **state)
{
	struct fixture *f = *state;
	char err[256] = "", path[256];
	struct spool *s = spool_open(&f->o, err, sizeof(err));
	struct spool_stats st;
	off_t full;
	int fd;

	assert_non_null(s);
	append_range(s, 0, 10);
	spool_close(s);
	seg_path(f->dir, true, path, sizeof(path));
	full = file_size(path);

	/* A crash in the middle of writing record 10: its first 20 bytes. */
	s = spool_open(&f->o, err, sizeof(err));
	assert_non_null(s);
	append_range(s, 10, 11);
	spool_close(s);
	seg_path(f->dir, true, path, sizeof(path));
	assert_int_equal(truncate(path, file_size(path) - 20), 0);

	/* And a header cut short in the other segment. */
	seg_path(f->dir, false, path, sizeof(path));
	fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "\x30\x00\x00", 3), 3);
	close(fd);
	assert_int_equal(file_size(path), full + 3);

	s = spool_open(&f->o, err, sizeof(err));
	assert_non_null(s);
	spool_stats(s, &st);
	assert_int_equal(st.events, 10);
	assert_true(st.discarded_bytes > 3);
	assert_int_equal(file_size(path), full); /* cut back to the last whole record */
	drain_expect(s, 0, 10, true);
	spool_close(s);
}

static void test_crc_mismatch_discards_the_rest(void **state)
{
	struct fixture *f = *state;
	char err[256] = "", path[256];
	struct spool *s = spool_open(&f->o, err, sizeof(err));
	struct spool_stats st;
	struct spool_batch b = { 0 };
	char c;
	int fd;

	assert_non_null(s);
	append_range(s, 0, 3);
	spool_close(s);
	seg_path(f->dir, true, path, sizeof(path));

	/* Flip one byte in the value of the last record. */
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &c, 1, file_size(path) - 3), 1);
	c ^= 0x20;
	assert_int_equal(pwrite(fd, &c, 1, file_size(path) - 3), 1);
	close(fd);

	s = spool_open(&f->o, err, sizeof(err));
	assert_non_null(s);
	spool_stats(s, &st);
	assert_int_equal(st.events, 2);
	assert_true(st.discarded_bytes > 0);
	assert_int_equal(spool_read(s, &b, 100, 1 << 20), 2);
	spool_batch_release(&b);
	drain_expect(s, 0, 2, true);
	spool_close(s);
}

static void test_segments_deleted_after_drain(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";
	struct spool *s;
	struct spool_stats st;
	struct spool_batch b = { 0 };
	int n, drained = 0;

	f->o.segment_bytes = 1024; /* ~15 records per segment */
	s = spool_open(&f->o, err, sizeof(err));
	assert_non_null(s);
	append_range(s, 0, 200);
	spool_stats(s, &st);
	assert_true(st.segments > 10);
	assert_int_equal(count_files(f->dir, ".seg"), (int)st.segments);

	/* Drain half: the segments behind the checkpoint go. */
	while (drained < 100 && (n = spool_read(s, &b, 10, 1 << 20)) > 0) {
		assert_int_equal(spool_commit(s, &b.end, (size_t)n), 0);
		drained += n;
	}
	spool_batch_release(&b);
	spool_stats(s, &st);
	assert_int_equal(st.events, 200 - (uint64_t)drained);
	assert_int_equal(count_files(f->dir, ".seg"), (int)st.segments);
	assert_true(st.segments < 10);
	assert_int_equal(count_files(f->dir, "checkpoint"), 1);
	spool_close(s);

	/* A restart resumes at the checkpoint. */
	s = spool_open(&f->o, err, sizeof(err));
	assert_non_null(s);
	assert_int_equal(spool_pending(s), 200 - (uint64_t)drained);
	drain_expect(s, drained, 200, true);
	spool_stats(s, &st);
	assert_int_equal(st.segments, 1);
	assert_int_equal(st.bytes, SPOOL_SEG_HEADER);
	spool_close(s);
}

static void test_bad_checkpoint_replays_everything(void **state)
{
	struct fixture *f = *state;
	char err[256] = "", path[256];
	struct spool_batch b = { 0 };
	struct spool *s = spool_open(&f->o, err, sizeof(err));
	int fd;

	assert_non_null(s);
	append_range(s, 0, 20);
	assert_int_equal(spool_read(s, &b, 5, 1 << 20), 5);
	assert_int_equal(spool_commit(s, &b.end, 5), 0);
	spool_batch_release(&b);
	spool_close(s);

	snprintf(path, sizeof(path), "%s/checkpoint", f->dir);
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "X", 1, 10), 1);
	close(fd);

	/* Duplicates, never loss: it starts over from the first record. */
	s = spool_open(&f->o, err, sizeof(err));
	assert_non_null(s);
	assert_int_equal(spool_pending(s), 20);
	drain_expect(s, 0, 20, true);
	spool_close(s);
}

static void test_bound_refuses_then_recovers(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";
	struct spool *s;
	struct spool_stats st;
	int i, rc = 0;

	f->o.max_bytes = 4096;
	f->o.segment_bytes = 1024;
	s = spool_open(&f->o, err, sizeof(err));
	assert_non_null(s);
	for (i = 0; i < 1000 && (rc = append_one(s, i)) == 0; i++)
		;
	assert_int_equal(rc, -ENOSPC);
	assert_true(i > 20);
	spool_stats(s, &st);
	assert_true(st.bytes <= 4096);
	assert_int_equal(st.events, (uint64_t)i);
	assert_false(spool_has_room(s, 1024));
	assert_int_equal(append_one(s, i), -ENOSPC); /* still full, nothing written */

	/* Draining makes room again. */
	drain_expect(s, 0, i, true);
	assert_true(spool_has_room(s, 1024));
	assert_int_equal(append_one(s, i), 0);
	drain_expect(s, i, i + 1, true);
	spool_close(s);
}

static void test_record_larger_than_segment(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";
	struct spool_batch b = { 0 };
	struct spool_rec r = { "k", 1, NULL, 0, NULL, 0 };
	char *big = lp_xmalloc(70000);
	struct spool *s = spool_open(&f->o, err, sizeof(err));

	assert_non_null(s);
	memset(big, 'x', 70000);
	r.val = big;
	r.vallen = 70000;
	assert_int_equal(spool_append(s, &r, 1), -EMSGSIZE);
	/* One that fills most of a segment is read whole even with a small read size. */
	r.vallen = 60000;
	assert_int_equal(spool_append(s, &r, 1), 0);
	assert_int_equal(append_one(s, 1), 0);
	assert_int_equal(spool_read(s, &b, 10, 100), 1);
	assert_int_equal(b.recs[0].vallen, 60000);
	assert_memory_equal(b.recs[0].val, big, 60000);
	assert_int_equal(spool_commit(s, &b.end, 1), 0);
	drain_expect(s, 1, 2, true);
	spool_batch_release(&b);
	spool_close(s);
	free(big);
}

/* Records are checked against the format's limit, not today's segment size:
 * lowering spool.segment_bytes and restarting keeps what was accepted. */
static void test_smaller_segment_size_keeps_records(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";
	struct spool_batch b = { 0 };
	struct spool_rec r = { "k", 1, NULL, 0, NULL, 0 };
	char *big = lp_xmalloc(30000);
	struct spool *s;
	int i, n;

	f->o.segment_bytes = 1 << 16;
	s = spool_open(&f->o, err, sizeof(err));
	assert_non_null(s);
	r.val = big;
	r.vallen = 30000;
	for (i = 0; i < 3; i++) {
		memset(big, 'a' + i, 30000);
		assert_int_equal(spool_append(s, &r, 1), 0);
	}
	spool_close(s);

	f->o.segment_bytes = 4096; /* each record is larger than a segment now */
	s = spool_open(&f->o, err, sizeof(err));
	assert_non_null(s);
	assert_int_equal(spool_pending(s), 3);
	for (i = 0; i < 3; i++) {
		n = spool_read(s, &b, 10, 100);
		assert_int_equal(n, 1);
		assert_int_equal(b.recs[0].vallen, 30000);
		memset(big, 'a' + i, 30000);
		assert_memory_equal(b.recs[0].val, big, 30000);
		assert_int_equal(spool_commit(s, &b.end, 1), 0);
	}
	assert_int_equal(spool_pending(s), 0);
	/* New appends follow today's size. */
	assert_int_equal(spool_append(s, &r, 1), -EMSGSIZE);
	append_range(s, 0, 5);
	drain_expect(s, 0, 5, true);
	spool_batch_release(&b);
	spool_close(s);
	free(big);
}

/* The headers of event i: none for i % 3 == 0, one for 1, three for 2
 * (the last value with a NUL byte inside and one empty). */
static size_t headers_of(int i, struct spool_hdr *h, char *buf, size_t len)
{
	size_t n = (size_t)(i % 3 == 0 ? 0 : i % 3 == 1 ? 1 : 3);

	snprintf(buf, len, "trace-%06d", i);
	if (n >= 1)
		h[0] = (struct spool_hdr){ "trace_id", 8, buf, strlen(buf) };
	if (n >= 2) {
		h[1] = (struct spool_hdr){ "bin", 3, "a\0b", 3 };
		h[2] = (struct spool_hdr){ "empty", 5, "", 0 };
	}
	return n;
}

static void append_with_headers(struct spool *s, int from, int to)
{
	for (int i = from; i < to; i++) {
		char val[128], key[32], hbuf[32];
		struct spool_hdr h[3];
		struct spool_rec r = { 0 };

		value_of(i, val, sizeof(val));
		snprintf(key, sizeof(key), "svc-%d", i % 3);
		r.key = key;
		r.keylen = strlen(key);
		r.val = val;
		r.vallen = strlen(val);
		r.hdrs = h;
		r.nhdrs = headers_of(i, h, hbuf, sizeof(hbuf));
		assert_int_equal(spool_append(s, &r, 1), 0);
	}
}

/* Reads and commits everything, checking values, keys and headers of
 * events from..to-1 (headers as headers_of gives them when with_hdrs,
 * none otherwise). */
static void drain_expect_headers(struct spool *s, int from, int to, bool with_hdrs)
{
	struct spool_batch b = { 0 };
	int next = from, n = 0;

	while (next < to && (n = spool_read(s, &b, to - next < 5 ? (size_t)(to - next) : 5,
					     200)) > 0) {
		for (int i = 0; i < n; i++, next++) {
			char want[128], hbuf[32];
			struct spool_hdr h[3];
			size_t nh = headers_of(next, h, hbuf, sizeof(hbuf));

			value_of(next, want, sizeof(want));
			assert_int_equal(b.recs[i].vallen, strlen(want));
			assert_memory_equal(b.recs[i].val, want, strlen(want));
			if (!with_hdrs)
				nh = 0;
			assert_int_equal(b.recs[i].nhdrs, nh);
			for (size_t k = 0; k < nh; k++) {
				assert_int_equal(b.recs[i].hdrs[k].namelen, h[k].namelen);
				assert_memory_equal(b.recs[i].hdrs[k].name, h[k].name, h[k].namelen);
				assert_int_equal(b.recs[i].hdrs[k].vallen, h[k].vallen);
				if (h[k].vallen)
					assert_memory_equal(b.recs[i].hdrs[k].val, h[k].val,
							    h[k].vallen);
			}
			if (nh == 0)
				assert_null(b.recs[i].hdrs);
		}
		assert_int_equal(spool_commit(s, &b.end, (size_t)n), 0);
	}
	assert_true(n >= 0);
	assert_int_equal(next, to);
	spool_batch_release(&b);
}

/* Records keep their headers (none, one, several, binary and empty values)
 * when read back, and across a restart. */
static void test_headers_round_trip(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";
	struct spool *s = spool_open(&f->o, err, sizeof(err));

	assert_non_null(s);
	append_with_headers(s, 0, 30);
	drain_expect_headers(s, 0, 10, true); /* 10 of them... */
	spool_close(s);
	s = spool_open(&f->o, err, sizeof(err)); /* ...the rest after recovery */
	assert_non_null(s);
	assert_int_equal(spool_pending(s), 20);
	append_with_headers(s, 30, 40);
	drain_expect_headers(s, 10, 40, true);
	spool_close(s);
}

/* A segment of the first format ("LPSPOOL1": no headers), left by an
 * older producer, is recovered (torn tail cut) and drained as records
 * without headers, ahead of new records, which keep theirs. */
static void test_old_format_segment_is_drained(void **state)
{
	struct fixture *f = *state;
	char err[256] = "", path[256];
	unsigned char rec[256];
	struct spool_stats st;
	struct spool *s;
	int fd;

	snprintf(path, sizeof(path), "%s/%020d.seg", f->dir, 3);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
	assert_true(fd >= 0);
	memcpy(rec, "LPSPOOL1", 8);
	memset(rec + 8, 0, 8);
	rec[8] = 3;
	assert_int_equal(write(fd, rec, 16), 16);
	for (int i = 0; i < 12; i++) {
		char val[128], key[32];
		uint32_t kl, vl, len, crc;

		value_of(i, val, sizeof(val));
		snprintf(key, sizeof(key), "svc-%d", i % 3);
		kl = (uint32_t)strlen(key);
		vl = (uint32_t)strlen(val);
		len = 4 + kl + vl;
		for (int b = 0; b < 4; b++) {
			rec[b] = (unsigned char)(len >> (8 * b));
			rec[8 + b] = (unsigned char)(kl >> (8 * b));
		}
		memcpy(rec + 12, key, kl);
		memcpy(rec + 12 + kl, val, vl);
		crc = spool_crc32c(spool_crc32c(0, rec, 4), rec + 8, len);
		for (int b = 0; b < 4; b++)
			rec[4 + b] = (unsigned char)(crc >> (8 * b));
		/* The last record torn: a crash in the middle of its write. */
		assert_int_equal(write(fd, rec, i == 11 ? 10 : 8 + len), i == 11 ? 10 : 8 + len);
	}
	close(fd);

	s = spool_open(&f->o, err, sizeof(err));
	assert_non_null(s);
	spool_stats(s, &st);
	assert_int_equal(st.recovered, 11);
	assert_int_equal(st.discarded_bytes, 10);
	append_with_headers(s, 11, 20);
	drain_expect_headers(s, 0, 11, false);
	drain_expect_headers(s, 11, 20, true);
	assert_int_equal(spool_pending(s), 0);
	spool_close(s);
}

/* A segment that cannot be created (disk full for a moment; here a
 * directory squats on the next segment's name, which stops root too) is
 * not fatal: appends that need it fail, the spool is not broken, and once
 * creation works again appends and readiness come back by themselves. */
static void test_failed_segment_create_is_retried(void **state)
{
	struct fixture *f = *state;
	char err[256] = "", path[256], squat[300];
	struct spool_stats st;
	struct spool *s;
	unsigned long long seq;
	int i, rc = 0;

	f->o.segment_bytes = 1024;
	s = spool_open(&f->o, err, sizeof(err));
	assert_non_null(s);
	seg_path(f->dir, true, path, sizeof(path));
	assert_int_equal(sscanf(strrchr(path, '/') + 1, "%llu", &seq), 1);
	snprintf(squat, sizeof(squat), "%s/%020llu.seg", f->dir, seq + 1);
	assert_int_equal(mkdir(squat, 0755), 0);

	for (i = 0; i < 100 && (rc = append_one(s, i)) == 0; i++)
		;
	assert_true(i > 5 && i < 100);
	assert_int_not_equal(rc, 0);
	spool_stats(s, &st);
	assert_false(st.broken);
	assert_int_not_equal(st.seg_errno, 0);
	assert_int_equal(st.events, (uint64_t)i);
	assert_false(spool_has_room(s, 200)); /* readiness: the next append needs a segment */
	assert_int_not_equal(append_one(s, i), 0); /* still blocked */

	/* Room again: readiness comes back without an append, appends work. */
	assert_int_equal(rmdir(squat), 0);
	assert_true(spool_has_room(s, 200));
	spool_stats(s, &st);
	assert_false(st.broken);
	assert_int_equal(st.seg_errno, 0);
	append_range(s, i, i + 50);
	drain_expect(s, 0, i + 50, true);
	spool_close(s);
}

static void test_directory_is_locked(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";
	struct spool *a = spool_open(&f->o, err, sizeof(err));
	struct spool *b;

	assert_non_null(a);
	b = spool_open(&f->o, err, sizeof(err));
	assert_null(b);
	assert_non_null(strstr(err, "in use"));
	spool_close(a);
	b = spool_open(&f->o, err, sizeof(err));
	assert_non_null(b);
	spool_close(b);
}

/* ---- group commit ---------------------------------------------------------- */

#define WRITERS 16
#define PER_WRITER 200

struct writer {
	struct spool *s;
	int id;
	int failures;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	char val[64];
	struct spool_rec r = { "w", 1, val, 0, NULL, 0 };

	for (int i = 0; i < PER_WRITER; i++) {
		snprintf(val, sizeof(val), "%02d:%04d", w->id, i);
		r.vallen = strlen(val);
		if (spool_append(w->s, &r, 1) != 0)
			w->failures++;
	}
	return NULL;
}

static void test_group_commit(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";
	struct writer w[WRITERS];
	pthread_t t[WRITERS];
	struct spool_stats st;
	struct spool_batch b = { 0 };
	int next[WRITERS] = { 0 }, n, total = 0;
	struct spool *s;

	f->o.segment_bytes = 8192; /* rotations under load too */
	s = spool_open(&f->o, err, sizeof(err));
	assert_non_null(s);
	for (int i = 0; i < WRITERS; i++) {
		w[i] = (struct writer){ s, i, 0 };
		assert_int_equal(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
	}
	for (int i = 0; i < WRITERS; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].failures, 0);
	}
	spool_stats(s, &st);
	assert_int_equal(st.events, WRITERS * PER_WRITER);
	print_message("group commit: %d appends, %llu fdatasyncs\n", WRITERS * PER_WRITER,
		      (unsigned long long)st.fsyncs_total);
	assert_true(st.fsyncs_total < WRITERS * PER_WRITER);

	/* Every record exactly once, each writer's in its own order. */
	while ((n = spool_read(s, &b, 100, 1 << 20)) > 0) {
		for (int i = 0; i < n; i++) {
			int id, seq;

			assert_int_equal(sscanf(b.recs[i].val, "%2d:%4d", &id, &seq), 2);
			assert_true(id >= 0 && id < WRITERS);
			assert_int_equal(seq, next[id]);
			next[id]++;
		}
		total += n;
		assert_int_equal(spool_commit(s, &b.end, (size_t)n), 0);
	}
	assert_int_equal(total, WRITERS * PER_WRITER);
	spool_batch_release(&b);
	spool_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c_vector),
		cmocka_unit_test_setup_teardown(test_append_read_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_keeps_undrained, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail_is_cut, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crc_mismatch_discards_the_rest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segments_deleted_after_drain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_checkpoint_replays_everything, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_bound_refuses_then_recovers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_record_larger_than_segment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_smaller_segment_size_keeps_records, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_failed_segment_create_is_retried, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_directory_is_locked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_headers_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_old_format_segment_is_drained, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
