/* time.c - RFC 3339 timestamps: formatting epoch milliseconds and parsing.
 *
 * Output is always UTC with exactly three fraction digits
 * ("2024-01-15T14:23:45.123Z"), so stored timestamps sort as strings.
 *
 * Input is read leniently, the way clients actually write timestamps:
 * "T", "t" or a space between date and time; a fraction of any length
 * (truncated to milliseconds); "Z", "z", "+HH:MM", "+HHMM" or "+HH" as the
 * zone; and no zone at all, which is read as UTC (the form seed 004 prints,
 * "2024-01-15 14:23:45").  Every field is range-checked (no 30 February);
 * a leap second ":60" is accepted and rolls over into the next minute. */
#include <errno.h>
#include <stdio.h>
#include <time.h>

#include "logpipe/util.h"

#include "logpipe/banned.h"

/* 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z: the instants
 * RFC 3339's four-digit years can write.  lp_rfc3339 clamps to them. */
#define MIN_EPOCH_MS (-62167219200000LL)
#define MAX_EPOCH_MS 253402300799999LL

/* Writes v (< 10^n) as n digits at p. */
static void put_digits(char *p, unsigned v, int n)
{
	while (n-- > 0) {
		p[n] = (char)('0' + v % 10);
		v /= 10;
	}
}

/* Formatted by hand, without gmtime_r and snprintf: it runs for every
 * event the producer takes in (glibc's gmtime_r takes the time zone lock,
 * and printf was the most of its cost in perf).  Days to the civil date by
 * Howard Hinnant's civil_from_days (era of 400 years). */
void lp_rfc3339(int64_t epoch_ms, char out[32])
{
	if (epoch_ms < MIN_EPOCH_MS)
		epoch_ms = MIN_EPOCH_MS;
	if (epoch_ms > MAX_EPOCH_MS)
		epoch_ms = MAX_EPOCH_MS;
	/* Floor division, so that instants before 1970 format correctly. */
	int64_t days = epoch_ms / 86400000;
	int64_t in_day = epoch_ms % 86400000;
	if (in_day < 0) {
		in_day += 86400000;
		days -= 1;
	}
	int64_t z = days + 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);                          /* [0, 146096] */
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
	int64_t y = (int64_t)yoe + era * 400;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
	unsigned mp = (5 * doy + 2) / 153;                                    /* [0, 11] */
	unsigned d = doy - (153 * mp + 2) / 5 + 1;                            /* [1, 31] */
	unsigned m = mp < 10 ? mp + 3 : mp - 9;                               /* [1, 12] */
	unsigned ms = (unsigned)in_day;

	if (m <= 2)
		y++;
	put_digits(out, (unsigned)y, 4);
	out[4] = '-';
	put_digits(out + 5, m, 2);
	out[7] = '-';
	put_digits(out + 8, d, 2);
	out[10] = 'T';
	put_digits(out + 11, ms / 3600000, 2);
	out[13] = ':';
	put_digits(out + 14, ms / 60000 % 60, 2);
	out[16] = ':';
	put_digits(out + 17, ms / 1000 % 60, 2);
	out[19] = '.';
	put_digits(out + 20, ms % 1000, 3);
	out[23] = 'Z';
	out[24] = '\0';
}

/* Reads exactly n decimal digits at *p, advancing it.  Returns -1 if any
 * of them is not a digit. */
static int read_digits(const char **p, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		char c = (*p)[i];
		if (c < '0' || c > '9')
			return -1;
		v = v * 10 + (c - '0');
	}
	*p += n;
	return v;
}

static bool is_leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/* Parses the zone designator at p (the rest of the string) into an offset
 * east of UTC in minutes. */
static int parse_zone(const char *p, int *offset_min)
{
	*offset_min = 0;
	if (*p == '\0')
		return 0; /* no zone: UTC */
	if ((*p == 'Z' || *p == 'z') && p[1] == '\0')
		return 0;
	if (*p != '+' && *p != '-')
		return -EINVAL;
	int sign = *p == '-' ? -1 : 1;
	p++;
	int hh = read_digits(&p, 2), mm = 0;
	if (hh < 0 || hh > 23)
		return -EINVAL;
	if (*p == ':')
		p++;
	if (*p != '\0') {
		mm = read_digits(&p, 2);
		if (mm < 0 || mm > 59)
			return -EINVAL;
	}
	if (*p != '\0')
		return -EINVAL;
	*offset_min = sign * (hh * 60 + mm);
	return 0;
}

int lp_parse_rfc3339(const char *s, int64_t *epoch_ms)
{
	if (!s)
		return -EINVAL;
	const char *p = s;
	int year = read_digits(&p, 4);
	if (year < 0 || *p++ != '-')
		return -EINVAL;
	int mon = read_digits(&p, 2);
	if (mon < 1 || mon > 12 || *p++ != '-')
		return -EINVAL;
	int day = read_digits(&p, 2);
	if (day < 1 || day > days_in_month(year, mon))
		return -EINVAL;
	if (*p != 'T' && *p != 't' && *p != ' ')
		return -EINVAL;
	p++;
	int hour = read_digits(&p, 2);
	if (hour < 0 || hour > 23 || *p++ != ':')
		return -EINVAL;
	int min = read_digits(&p, 2);
	if (min < 0 || min > 59 || *p++ != ':')
		return -EINVAL;
	int sec = read_digits(&p, 2);
	if (sec < 0 || sec > 60)
		return -EINVAL;

	int frac_ms = 0;
	if (*p == '.' || *p == ',') {
		p++;
		if (*p < '0' || *p > '9')
			return -EINVAL;
		/* Keep the first three digits, scaled to milliseconds. */
		int scale = 100;
		for (; *p >= '0' && *p <= '9'; p++) {
			frac_ms += (*p - '0') * scale;
			scale /= 10;
		}
	}

	int offset_min;
	if (parse_zone(p, &offset_min) < 0)
		return -EINVAL;

	struct tm tm = {
		.tm_year = year - 1900,
		.tm_mon = mon - 1,
		.tm_mday = day,
		.tm_hour = hour,
		.tm_min = min,
		.tm_sec = sec,
	};
	time_t t = timegm(&tm);
	*epoch_ms = ((int64_t)t - (int64_t)offset_min * 60) * 1000 + frac_ms;
	return 0;
}
