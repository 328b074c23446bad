/*
 * keyscmd.h - `scrim keys ...`: virtual keys in Redis (create, list,
 * show, revoke, rotate, usage) and config keys (generate).
 */
#ifndef SCRIM_KEYSCMD_H
#define SCRIM_KEYSCMD_H

int keyscmd_run(int argc, char **argv);

#endif
