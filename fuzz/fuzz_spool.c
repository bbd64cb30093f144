/* fuzz_spool.c - the producer spool's recovery (producer/spool.c) on
 * damaged files: what a crash, a full disk or a bad sector leaves behind.
 *
 * The input becomes the records of segment 1 (after a valid segment
 * header), once as a segment of the first format ("LPSPOOL1", records
 * without headers) and once of the second ("LPSPOOL2", records with a
 * header block); if it holds a NUL-separated tail of 28 bytes or more, those
 * bytes become the checkpoint file.  The spool is then opened, drained
 * completely and reopened.  Checks: opening never fails on damaged
 * content; every record handed out lies inside the file; the counts agree
 * (events at open = records drained); and once drained, a reopened spool
 * holds nothing.  Works in a directory under /dev/shm when there is one,
 * so fsync costs nothing. */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "logpipe/log.h"
#include "../producer/spool.h"

#include "logpipe/banned.h"

static char dir[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct stat st;

	lp_log_init("fuzz", LP_LOG_ERROR);
	snprintf(dir, sizeof(dir), "%s/lp-fuzz-spool-%d",
		 stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
	return 0;
}

static void clean(void)
{
	char path[256];
	struct dirent *de;
	DIR *d = opendir(dir);

	while (d && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		unlink(path);
	}
	if (d)
		closedir(d);
	rmdir(dir);
}

static void put(const char *name, const void *a, size_t alen, const void *b, size_t blen)
{
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	FUZZ_CHECK(fd >= 0, "cannot create %s", path);
	FUZZ_CHECK(write(fd, a, alen) == (ssize_t)alen, "short write");
	if (blen)
		FUZZ_CHECK(write(fd, b, blen) == (ssize_t)blen, "short write");
	close(fd);
}

/* One round on the input with the segment header hdr. */
static void one(const uint8_t *data, size_t size, const unsigned char hdr[16])
{
	struct spool_opts o = { dir, 1 << 20, 1 << 16, NULL };
	struct spool_batch b = { 0 };
	struct spool_stats st;
	const uint8_t *nul = memchr(data, 0, size);
	size_t seglen = size;
	uint64_t events, drained = 0;
	char err[256];
	struct spool *s;
	int n;

	clean();
	FUZZ_CHECK(mkdir(dir, 0755) == 0, "cannot create %s", dir);
	if (nul && size - (size_t)(nul - data) - 1 >= 28) {
		seglen = (size_t)(nul - data);
		put("checkpoint", nul + 1, 28, NULL, 0);
	}
	put("00000000000000000001.seg", hdr, 16, data, seglen);

	s = spool_open(&o, err, sizeof(err));
	FUZZ_CHECK(s != NULL, "open failed: %s", err);
	spool_stats(s, &st);
	events = st.events;
	FUZZ_CHECK(st.discarded_bytes <= seglen, "discarded %llu of %zu bytes",
		   (unsigned long long)st.discarded_bytes, seglen);
	while ((n = spool_read(s, &b, 50, 4096)) > 0) {
		for (int i = 0; i < n; i++) {
			const struct spool_rec *r = &b.recs[i];

			FUZZ_CHECK(r->val + r->vallen <= b.buf + b.bufcap && r->key >= b.buf,
				   "record %d outside the read buffer", i);
			for (size_t k = 0; k < r->nhdrs; k++)
				FUZZ_CHECK(r->hdrs[k].name >= b.buf && r->hdrs[k].val >= b.buf &&
						   r->hdrs[k].name + r->hdrs[k].namelen <= r->val &&
						   r->hdrs[k].val + r->hdrs[k].vallen <= r->val,
					   "header %zu of record %d outside it", k, i);
		}
		FUZZ_CHECK(spool_commit(s, &b.end, (size_t)n) == 0, "commit failed");
		drained += (uint64_t)n;
	}
	FUZZ_CHECK(n == 0, "read failed: %d", n);
	FUZZ_CHECK(drained == events, "%llu events at open, %llu drained",
		   (unsigned long long)events, (unsigned long long)drained);
	spool_batch_release(&b);
	spool_close(s);

	s = spool_open(&o, err, sizeof(err));
	FUZZ_CHECK(s != NULL, "reopen failed: %s", err);
	FUZZ_CHECK(spool_pending(s) == 0, "%llu events after a full drain",
		   (unsigned long long)spool_pending(s));
	spool_close(s);
	clean();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned char v1[16] = { 'L', 'P', 'S', 'P', 'O', 'O', 'L', '1', 1 };
	static const unsigned char v2[16] = { 'L', 'P', 'S', 'P', 'O', 'O', 'L', '2', 1 };

	one(data, size, v1);
	one(data, size, v2);
	return 0;
}
