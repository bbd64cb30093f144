/* config.h - settings declared once as a table, loaded from a libconfig
 * file and overridden by LOGPIPE_* environment variables.
 *
 * A service declares `static const struct lp_cfg_opt opts[]` describing
 * each key (dotted path in the file, e.g. "kafka.brokers"), its type, its
 * default (as text), the offset of the field in the service's settings
 * struct, and a one-line help.  The same table drives loading, --help and
 * docs/configuration.md.  The environment name of a key is LOGPIPE_ plus
 * the key upper-cased with '.' and '-' turned into '_'
 * ("kafka.brokers" -> LOGPIPE_KAFKA_BROKERS).
 *
 * Precedence: environment > file > default. */
#ifndef LOGPIPE_CONFIG_H
#define LOGPIPE_CONFIG_H

#include <stddef.h>
#include <stdio.h>

enum lp_cfg_type {
	LP_CFG_INT,    /* long long field */
	LP_CFG_DOUBLE, /* double field */
	LP_CFG_BOOL,   /* int field, 0 or 1; accepts true/false/yes/no/1/0 */
	LP_CFG_STR,    /* char * field, heap-owned, freed by lp_config_release */
};

struct lp_cfg_opt {
	const char *key;       /* dotted path, NULL ends the table */
	enum lp_cfg_type type;
	const char *def;       /* default as text; NULL for an empty string */
	size_t offset;         /* offsetof() the field in the settings struct */
	const char *help;      /* one line for --help and the docs */
	long long min, max;    /* inclusive bounds for INT; both 0 = unbounded */
};

#define LP_CFG_END { NULL, 0, NULL, 0, NULL, 0, 0 }

/* Fills the struct at base: defaults, then the file at path (may be NULL),
 * then the environment.  Returns 0, or -EINVAL with a message naming the
 * key and the source in err.  A key in the file that the table does not
 * declare is an error.  Every field is written without being read first
 * (release the struct before loading it again); on error its strings are
 * already freed. */
int lp_config_load(const struct lp_cfg_opt *table, void *base, const char *path,
		   char *err, size_t errlen);
/* Frees the strings owned by the struct at base. */
void lp_config_release(const struct lp_cfg_opt *table, void *base);
/* Prints the table (key, env name, type, default, help) for --help. */
void lp_config_print_help(FILE *out, const struct lp_cfg_opt *table);
/* Prints the effective values as "key = value" lines (for --check-config).
 * Values of keys containing "password", "secret" or "token" print as "***". */
void lp_config_print(FILE *out, const struct lp_cfg_opt *table, const void *base);
/* Writes the environment name of key into out. */
void lp_config_env_name(const char *key, char *out, size_t outlen);

/* The command line every binary shares:
 *   --config PATH | -c PATH, --help | -h, --version | -V, --check-config.
 * Loads the configuration into base.  Returns:
 *   0  the service should start;
 *   1  the caller should exit 0 (help, version or a good --check-config
 *      was printed; the struct holds nothing to release);
 *  -1  the caller should exit 2 (a message was printed on stderr). */
int lp_cli_main(int argc, char **argv, const char *prog, const char *summary,
		const struct lp_cfg_opt *table, void *base);

#endif
