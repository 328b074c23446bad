/*
 * indexcmd.h - `scrim index`: add, search, stats, remove and list the
 * local document indexes (state_dir/index/NAME.db).
 */
#ifndef SCRIM_INDEXCMD_H
#define SCRIM_INDEXCMD_H

int indexcmd_run(int argc, char **argv);

#endif
