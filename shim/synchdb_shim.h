/* Declarations shared by the shim's files. */
#ifndef SYNCHDB_SHIM_H
#define SYNCHDB_SHIM_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "synchdb_core.h"

extern volatile sig_atomic_t sdb_got_sigterm;
extern void sdb_init_ops(SdbPgOps *ops);
extern void sdb_define_apply_gucs(void);

#endif
