/*
 * scrim.h - forward declarations and the few definitions every module
 * shares. No module's internals live here: each concern has its own header.
 */
#ifndef SCRIM_H
#define SCRIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRIM_VERSION "0.1.0"

#if defined(__GNUC__)
#define SCRIM_MUSTCHECK __attribute__((warn_unused_result))
#define SCRIM_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define SCRIM_NORETURN __attribute__((noreturn))
#else
#define SCRIM_MUSTCHECK
#define SCRIM_PRINTF(f, a)
#define SCRIM_NORETURN
#endif

/* Unit tests reach file-local functions through this (curl's UNITTEST). */
#ifdef SCRIM_TESTING
#define SCRIM_STATIC
#else
#define SCRIM_STATIC static
#endif

#define SCRIM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

struct scrim_config;
struct scrim_server;
struct scrim_conn;
struct scrim_req;
struct scrim_upstream;
struct http_head;

#endif
