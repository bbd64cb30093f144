/* fuzz_config.c - lp_config_load: a libconfig file and LOGPIPE_* variables
 * over a table with every option type, bounded and unbounded.
 *
 * Input: the file's text, then optionally a NUL byte and environment
 * overrides, one per line as "<c>VALUE" where the byte c picks the option
 * (c modulo the table size).  The file is handed over as a memfd, so no
 * file system is touched.  Checks: success leaves every value in bounds
 * and every string set; failure leaves a message naming a key or the
 * file; lp_config_print and lp_config_release work on what was loaded. */
#include <errno.h>
#include <stddef.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "logpipe/config.h"
#include "logpipe/log.h"

#include "logpipe/banned.h"

struct settings {
	long long plain;     /* unbounded int */
	long long bounded;   /* int in 1..100 */
	long long negative;  /* int in -10..-1 */
	double ratio;        /* double */
	int flag;            /* bool */
	int other_flag;      /* bool */
	char *name;          /* string with a default */
	char *empty;         /* string without one */
	char *deep;          /* a deeply nested key */
	char *secret;        /* printed as *** */
};

#define OPT(key, type, def, field, lo, hi) \
	{ key, type, def, offsetof(struct settings, field), "help", lo, hi }

static const struct lp_cfg_opt table[] = {
	OPT("plain", LP_CFG_INT, "5", plain, 0, 0),
	OPT("limits.bounded", LP_CFG_INT, "10", bounded, 1, 100),
	OPT("limits.negative", LP_CFG_INT, "-3", negative, -10, -1),
	OPT("limits.ratio", LP_CFG_DOUBLE, "0.5", ratio, 0, 0),
	OPT("flag", LP_CFG_BOOL, "false", flag, 0, 0),
	OPT("feature.other-flag", LP_CFG_BOOL, "yes", other_flag, 0, 0),
	OPT("name", LP_CFG_STR, "logpipe", name, 0, 0),
	OPT("empty", LP_CFG_STR, NULL, empty, 0, 0),
	OPT("a.b.c.deep", LP_CFG_STR, "x", deep, 0, 0),
	OPT("auth.secret", LP_CFG_STR, "s3cret", secret, 0, 0),
	LP_CFG_END,
};
#define NOPTS (sizeof(table) / sizeof(table[0]) - 1)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	lp_log_init("fuzz", LP_LOG_ERROR);
	return 0;
}

/* Sets the overrides in env ("<c>VALUE" lines); records which were set. */
static void set_env(char *env, int set[NOPTS])
{
	char name[128], *line, *save = NULL;

	for (line = strtok_r(env, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		size_t i = (unsigned char)line[0] % NOPTS;

		lp_config_env_name(table[i].key, name, sizeof(name));
		setenv(name, line + 1, 1);
		set[i] = 1;
	}
}

static void clear_env(const int set[NOPTS])
{
	char name[128];

	for (size_t i = 0; i < NOPTS; i++) {
		if (!set[i])
			continue;
		lp_config_env_name(table[i].key, name, sizeof(name));
		unsetenv(name);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct settings s;
	char *text, *env, path[64], err[512] = "";
	int set[NOPTS] = { 0 };
	int fd, rc;

	fuzz_split(data, size, &text, &env);
	/* Includes read other files (the operator's own config is trusted):
	 * "/dev/zero" would only make the fuzzer hang. */
	if (strstr(text, "@include")) {
		free(text);
		free(env);
		return 0;
	}
	fd = memfd_create("fuzz-config", MFD_CLOEXEC);
	FUZZ_CHECK(fd >= 0, "memfd_create failed");
	if (*text)
		FUZZ_CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text), "short write");
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	set_env(env, set);

	memset(&s, 0xa5, sizeof(s)); /* the loader must not read fields first */
	rc = lp_config_load(table, &s, path, err, sizeof(err));
	clear_env(set);
	close(fd);
	if (rc == 0) {
		FILE *null = fopen("/dev/null", "w");

		FUZZ_CHECK(s.bounded >= 1 && s.bounded <= 100, "bounded %lld", s.bounded);
		FUZZ_CHECK(s.negative >= -10 && s.negative <= -1, "negative %lld", s.negative);
		FUZZ_CHECK(s.flag == 0 || s.flag == 1, "flag %d", s.flag);
		FUZZ_CHECK(s.other_flag == 0 || s.other_flag == 1, "other flag %d", s.other_flag);
		FUZZ_CHECK(s.name && s.empty && s.deep && s.secret, "a string is NULL");
		if (null) {
			lp_config_print(null, table, &s);
			fclose(null);
		}
		lp_config_release(table, &s);
	} else {
		FUZZ_CHECK(rc == -EINVAL, "unexpected error %d", rc);
		FUZZ_CHECK(err[0] != '\0', "error without a message");
	}
	free(text);
	free(env);
	return 0;
}
