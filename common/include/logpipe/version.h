/* version.h - the logpipe release shown by --version and /health. */
#ifndef LOGPIPE_VERSION_H
#define LOGPIPE_VERSION_H
#define LOGPIPE_VERSION "0.1.0"
#endif
