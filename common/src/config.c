/* config.c - settings table loaded from defaults, a libconfig file and the
 * environment, and the command line every binary shares.
 *
 * Loading makes three passes over the table, each overwriting the last:
 * the defaults (which also initialise every field, so the struct may start
 * uninitialised), the file, then the LOGPIPE_* environment.  All values
 * go through the same setters, which check the type and the bounds and
 * name the key and where the value came from when they refuse it.  The
 * file is checked for keys the table does not know, so a misspelt key is
 * an error rather than a silently ignored setting.  On any error the
 * strings loaded so far are freed. */
#include <errno.h>
#include <libconfig.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "logpipe/buf.h"
#include "logpipe/config.h"
#include "logpipe/util.h"
#include "logpipe/version.h"

#include "logpipe/banned.h"

static const char *const type_names[] = { "int", "double", "bool", "string" };

static __attribute__((format(printf, 3, 4))) int fail(char *err, size_t errlen,
						      const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static void *field(const struct lp_cfg_opt *o, const void *base)
{
	return (char *)base + o->offset;
}

void lp_config_env_name(const char *key, char *out, size_t outlen)
{
	struct lp_buf b = LP_BUF_INIT;

	lp_buf_adds(&b, "LOGPIPE_");
	for (const char *p = key; *p; p++) {
		char c = *p;

		if (c == '.' || c == '-')
			c = '_';
		else if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		lp_buf_addch(&b, c);
	}
	lp_strlcpy(out, b.buf, outlen);
	lp_buf_release(&b);
}

/* ---- setters ------------------------------------------------------------ */

/* Each setter stores a value of the option's type into the struct at base,
 * or returns -EINVAL with "SRC: key "K": problem" in err. */

static int set_int(const struct lp_cfg_opt *o, void *base, long long v, const char *src,
		   char *err, size_t errlen)
{
	if ((o->min || o->max) && (v < o->min || v > o->max))
		return fail(err, errlen, "%s: key \"%s\": %lld is out of range %lld..%lld", src,
			    o->key, v, o->min, o->max);
	*(long long *)field(o, base) = v;
	return 0;
}

static int set_double(const struct lp_cfg_opt *o, void *base, double v, const char *src,
		      char *err, size_t errlen)
{
	if (!isfinite(v))
		return fail(err, errlen, "%s: key \"%s\": %g is not a finite number", src, o->key,
			    v);
	*(double *)field(o, base) = v;
	return 0;
}

static void set_str(const struct lp_cfg_opt *o, void *base, const char *v)
{
	char **p = field(o, base);

	free(*p);
	*p = lp_xstrdup(v);
}

static int parse_bool(const char *s, int *out)
{
	static const char *const words[][2] = {
		{ "true", "false" }, { "yes", "no" }, { "on", "off" }, { "1", "0" },
	};

	for (size_t i = 0; i < LP_ARRAY_SIZE(words); i++) {
		for (int j = 0; j < 2; j++) {
			if (!strcasecmp(s, words[i][j])) {
				*out = !j;
				return 0;
			}
		}
	}
	return -EINVAL;
}

/* Sets the option from text (a default or an environment variable). */
static int set_text(const struct lp_cfg_opt *o, void *base, const char *text, const char *src,
		    char *err, size_t errlen)
{
	char *end;

	errno = 0;
	switch (o->type) {
	case LP_CFG_INT: {
		long long v = strtoll(text, &end, 10);

		if (end == text || *end || errno)
			break;
		return set_int(o, base, v, src, err, errlen);
	}
	case LP_CFG_DOUBLE: {
		double v = strtod(text, &end);

		if (end == text || *end || errno)
			break;
		return set_double(o, base, v, src, err, errlen);
	}
	case LP_CFG_BOOL:
		if (parse_bool(text, field(o, base)) < 0)
			break;
		return 0;
	case LP_CFG_STR:
		set_str(o, base, text);
		return 0;
	}
	return fail(err, errlen, "%s: key \"%s\": \"%s\" is not a valid %s", src, o->key, text,
		    type_names[o->type]);
}

/* Sets the option from a setting of the file.  The file's types are
 * strict: an int for INT, an int or a float for DOUBLE, true/false (or 0/1)
 * for BOOL, a string for STR. */
static int set_setting(const struct lp_cfg_opt *o, void *base, const config_setting_t *s,
		       const char *path, char *err, size_t errlen)
{
	static const char *const setting_types[] = { "nothing", "a group",  "an int",
						      "an int",  "a float",  "a string",
						      "a bool",  "an array", "a list" };
	int t = config_setting_type(s);
	bool is_int = t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
	char src[512];

	snprintf(src, sizeof(src), "%s:%d", path, config_setting_source_line(s));
	switch (o->type) {
	case LP_CFG_INT:
		if (is_int)
			return set_int(o, base, config_setting_get_int64(s), src, err, errlen);
		break;
	case LP_CFG_DOUBLE:
		if (is_int || t == CONFIG_TYPE_FLOAT)
			return set_double(o, base,
					  is_int ? (double)config_setting_get_int64(s)
						 : config_setting_get_float(s),
					  src, err, errlen);
		break;
	case LP_CFG_BOOL:
		if (t == CONFIG_TYPE_BOOL) {
			*(int *)field(o, base) = config_setting_get_bool(s);
			return 0;
		}
		if (is_int && (unsigned long long)config_setting_get_int64(s) <= 1) {
			*(int *)field(o, base) = (int)config_setting_get_int64(s);
			return 0;
		}
		break;
	case LP_CFG_STR:
		if (t == CONFIG_TYPE_STRING) {
			set_str(o, base, config_setting_get_string(s));
			return 0;
		}
		break;
	}
	return fail(err, errlen, "%s: key \"%s\": expected %s, got %s", src, o->key,
		    type_names[o->type],
		    t >= 0 && (size_t)t < LP_ARRAY_SIZE(setting_types) ? setting_types[t] : "?");
}

/* ---- loading ------------------------------------------------------------ */

static const struct lp_cfg_opt *find_opt(const struct lp_cfg_opt *table, const char *key)
{
	for (; table->key; table++)
		if (!strcmp(table->key, key))
			return table;
	return NULL;
}

/* Fails on the first setting below group whose dotted path (path holds
 * the group's) is not a key of the table. */
static int check_unknown(const struct lp_cfg_opt *table, const config_setting_t *group,
			 struct lp_buf *path, const char *file, char *err, size_t errlen)
{
	for (int i = 0; i < config_setting_length(group); i++) {
		const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
		size_t mark = path->len;
		int ret = 0;

		if (mark)
			lp_buf_addch(path, '.');
		lp_buf_adds(path, config_setting_name(s));
		if (!find_opt(table, path->buf)) {
			if (config_setting_is_group(s))
				ret = check_unknown(table, s, path, file, err, errlen);
			else
				ret = fail(err, errlen, "%s:%d: unknown key \"%s\"", file,
					   config_setting_source_line(s), path->buf);
		}
		path->len = mark;
		path->buf[mark] = '\0';
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int load_file(const struct lp_cfg_opt *table, void *base, const char *path, char *err,
		     size_t errlen)
{
	struct lp_buf keypath = LP_BUF_INIT;
	config_t cfg;
	int ret = 0;

	config_init(&cfg);
	errno = 0;
	if (config_read_file(&cfg, path) != CONFIG_TRUE) {
		if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
			ret = fail(err, errlen, "cannot read config file \"%s\": %s", path,
				   strerror(errno ? errno : EIO));
		else
			ret = fail(err, errlen, "%s:%d: %s", path, config_error_line(&cfg),
				   config_error_text(&cfg));
		goto out;
	}
	ret = check_unknown(table, config_root_setting(&cfg), &keypath, path, err, errlen);
	for (const struct lp_cfg_opt *o = table; o->key && !ret; o++) {
		const config_setting_t *s = config_lookup(&cfg, o->key);

		if (s)
			ret = set_setting(o, base, s, path, err, errlen);
	}
out:
	lp_buf_release(&keypath);
	config_destroy(&cfg);
	return ret;
}

int lp_config_load(const struct lp_cfg_opt *table, void *base, const char *path, char *err,
		   size_t errlen)
{
	const struct lp_cfg_opt *o;
	int ret = 0;

	/* Defaults first, writing every field without reading it. */
	for (o = table; o->key; o++) {
		if (o->type == LP_CFG_STR)
			*(char **)field(o, base) = NULL;
		ret = set_text(o, base, o->def ? o->def : (o->type == LP_CFG_STR ? "" : "0"),
			       "default", err, errlen);
		if (ret < 0)
			goto out;
	}
	if (path) {
		ret = load_file(table, base, path, err, errlen);
		if (ret < 0)
			goto out;
	}
	for (o = table; o->key; o++) {
		char name[256], src[300];
		const char *v;

		lp_config_env_name(o->key, name, sizeof(name));
		v = getenv(name);
		if (!v)
			continue;
		snprintf(src, sizeof(src), "environment %s", name);
		ret = set_text(o, base, v, src, err, errlen);
		if (ret < 0)
			goto out;
	}
out:
	if (ret < 0)
		lp_config_release(table, base);
	return ret;
}

void lp_config_release(const struct lp_cfg_opt *table, void *base)
{
	for (; table->key; table++) {
		if (table->type == LP_CFG_STR) {
			char **p = field(table, base);

			free(*p);
			*p = NULL;
		}
	}
}

/* ---- printing ----------------------------------------------------------- */

/* Keys whose values --check-config must not show. */
static bool is_secret(const char *key)
{
	return strcasestr(key, "password") || strcasestr(key, "secret") ||
	       strcasestr(key, "token") || strcasestr(key, "keys");
}

static void add_value(struct lp_buf *out, const struct lp_cfg_opt *o, const void *base)
{
	const void *p = field(o, base);
	char num[40];

	switch (o->type) {
	case LP_CFG_INT:
		lp_buf_addf(out, "%lld", *(const long long *)p);
		break;
	case LP_CFG_DOUBLE:
		/* The shortest form that reads back as the same double. */
		for (int prec = 15; prec <= 17; prec++) {
			snprintf(num, sizeof(num), "%.*g", prec, *(const double *)p);
			if (strtod(num, NULL) == *(const double *)p)
				break;
		}
		lp_buf_adds(out, num);
		break;
	case LP_CFG_BOOL:
		lp_buf_adds(out, *(const int *)p ? "true" : "false");
		break;
	case LP_CFG_STR:
		lp_buf_add_json_str(out, *(char *const *)p);
		break;
	}
}

void lp_config_print(FILE *out, const struct lp_cfg_opt *table, const void *base)
{
	struct lp_buf b = LP_BUF_INIT;

	for (const struct lp_cfg_opt *o = table; o->key; o++) {
		lp_buf_addf(&b, "%s = ", o->key);
		if (is_secret(o->key))
			lp_buf_adds(&b, "\"***\"");
		else
			add_value(&b, o, base);
		lp_buf_addch(&b, '\n');
	}
	fputs(b.buf, out);
	lp_buf_release(&b);
}

void lp_config_print_help(FILE *out, const struct lp_cfg_opt *table)
{
	int wkey = 3, wenv = 3, wdef = 7;
	char env[256];

	for (const struct lp_cfg_opt *o = table; o->key; o++) {
		lp_config_env_name(o->key, env, sizeof(env));
		if ((int)strlen(o->key) > wkey)
			wkey = (int)strlen(o->key);
		if ((int)strlen(env) > wenv)
			wenv = (int)strlen(env);
		if (o->def && (int)strlen(o->def) > wdef)
			wdef = (int)strlen(o->def);
	}
	fprintf(out, "  %-*s  %-*s  %-6s  %-*s  %s\n", wkey, "key", wenv, "environment", "type",
		wdef, "default", "description");
	for (const struct lp_cfg_opt *o = table; o->key; o++) {
		lp_config_env_name(o->key, env, sizeof(env));
		fprintf(out, "  %-*s  %-*s  %-6s  %-*s  %s", wkey, o->key, wenv, env,
			type_names[o->type], wdef, o->def ? o->def : "", o->help ? o->help : "");
		if (o->type == LP_CFG_INT && (o->min || o->max))
			fprintf(out, " (%lld..%lld)", o->min, o->max);
		fputc('\n', out);
	}
}

/* ---- command line ------------------------------------------------------- */

static void usage(FILE *out, const char *prog, const char *summary,
		  const struct lp_cfg_opt *table)
{
	fprintf(out,
		"Usage: %s [--config FILE] [--check-config] [--help] [--version]\n"
		"%s%s"
		"\n"
		"Options:\n"
		"  -c, --config FILE   read settings from FILE (default: $LOGPIPE_CONFIG)\n"
		"      --check-config  load the settings, print the effective values and exit\n"
		"  -h, --help          show this help and exit\n"
		"  -V, --version       show the version and exit\n"
		"\n"
		"Settings (file key, environment variable; environment > file > default):\n",
		prog, summary ? summary : "", summary ? "\n" : "");
	lp_config_print_help(out, table);
}

int lp_cli_main(int argc, char **argv, const char *prog, const char *summary,
		const struct lp_cfg_opt *table, void *base)
{
	bool help = false, version = false, check = false;
	const char *path = NULL;
	char err[512];

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--config") || !strcmp(a, "-c")) {
			if (i + 1 == argc) {
				fprintf(stderr, "%s: %s needs a file name\n", prog, a);
				return -1;
			}
			path = argv[++i];
		} else if (lp_str_has_prefix(a, "--config=")) {
			path = a + strlen("--config=");
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			help = true;
		} else if (!strcmp(a, "--version") || !strcmp(a, "-V")) {
			version = true;
		} else if (!strcmp(a, "--check-config")) {
			check = true;
		} else {
			fprintf(stderr, "%s: unknown argument \"%s\" (try --help)\n", prog, a);
			return -1;
		}
	}
	if (help) {
		usage(stdout, prog, summary, table);
		return 1;
	}
	if (version) {
		printf("%s %s\n", prog, LOGPIPE_VERSION);
		return 1;
	}
	if (!path || !*path)
		path = getenv("LOGPIPE_CONFIG");
	if (path && !*path)
		path = NULL;
	if (lp_config_load(table, base, path, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", prog, err);
		return -1;
	}
	if (check) {
		lp_config_print(stdout, table, base);
		fflush(stdout);
		lp_config_release(table, base);
		return 1;
	}
	return 0;
}
