/* Declarations shared by the shim's files. */
#ifndef SYNCHDB_SHIM_H
#define SYNCHDB_SHIM_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "postmaster/bgworker.h"
#include "synchdb_core.h"

extern volatile sig_atomic_t sdb_got_sigterm;
extern void sdb_init_ops(SdbPgOps *ops);
extern void sdb_define_apply_gucs(void);
/* synchdb.c: synchdb.sequence_sync_interval (ms) */
extern int	sdb_sequence_sync_interval_ms(void);
/* synchdb.c: common settings of synchdb's background workers */
extern void sdb_init_bgw(BackgroundWorker *bgw, const char *function, const char *type);
/* synchdb.c: starts a connector's worker (needs postgres.h for Oid) */
typedef enum SdbStartWhen
{
	SDB_START_NOW,
	/* once the caller's transaction commits; not if it rolls back */
	SDB_START_AT_COMMIT,
	/* once the caller's transaction ends, however it ends */
	SDB_START_AT_END
} SdbStartWhen;
extern int	sdb_register_connector_worker(Oid dboid, Oid userid, const char *name, const char *mode,
										  SdbStartWhen when);
/* What a connector hands its copy helpers through bgw_extra (pgops.c starts them). */
typedef struct SdbHelperExtra
{
	Oid			dboid;
	Oid			userid;
	int32		parent_slot;
	char		name[64];
} SdbHelperExtra;
/* launcher.c: the synchdb.synchdb_auto_launcher GUC and the auto-launcher worker */
extern void sdb_launcher_init(void);

#endif
