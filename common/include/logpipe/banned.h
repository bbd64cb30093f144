/* banned.h - functions that must not be used in logpipe (after git's).
 * Included last by every .c file through common.h; each use is a compile
 * error that names the safer replacement. */
#ifndef LOGPIPE_BANNED_H
#define LOGPIPE_BANNED_H

#define BANNED(func) sorry_##func##_is_a_banned_function

#undef strcpy
#define strcpy(x, y) BANNED(strcpy)      /* use lp_strlcpy */
#undef strcat
#define strcat(x, y) BANNED(strcat)      /* use struct lp_buf */
#undef strncpy
#define strncpy(x, y, n) BANNED(strncpy) /* use lp_strlcpy */
#undef sprintf
#define sprintf(...) BANNED(sprintf)     /* use snprintf */
#undef vsprintf
#define vsprintf(...) BANNED(vsprintf)   /* use vsnprintf */
#undef strtok
#define strtok(x, y) BANNED(strtok)      /* use strtok_r */
#undef gmtime
#define gmtime(t) BANNED(gmtime)         /* use gmtime_r */
#undef localtime
#define localtime(t) BANNED(localtime)   /* use localtime_r */
#undef ctime
#define ctime(t) BANNED(ctime)
#undef asctime
#define asctime(t) BANNED(asctime)
/* jansson recurses once per level of nesting: outside text could overflow a
 * worker thread's stack (json.h).  lp_json_loadb refuses it first. */
#undef json_loadb
#define json_loadb(b, n, f, e) BANNED(json_loadb) /* use lp_json_loadb */
#undef json_loads
#define json_loads(s, f, e) BANNED(json_loads)    /* use lp_json_loads */
#undef json_loadf
#define json_loadf(...) BANNED(json_loadf)
#undef json_loadfd
#define json_loadfd(...) BANNED(json_loadfd)
#undef json_load_file
#define json_load_file(...) BANNED(json_load_file)
#undef json_load_callback
#define json_load_callback(...) BANNED(json_load_callback)

#endif
