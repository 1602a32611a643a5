/*
 * synchdb.c — what PostgreSQL loads: _PG_init (GUCs, shared memory), the SQL-callable
 * functions, and the background worker entry point. Everything else is in the Rust
 * core (libsynchdb_core.so); see include/synchdb_core.h.
 */
#include "postgres.h"

#include <signal.h>

#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/origin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/guc.h"
#include "utils/wait_event.h"

#include "synchdb_shim.h"

PG_MODULE_MAGIC;

/* GUCs */
static int	sdb_max_connector_workers = 30;
static int	sdb_naptime = 100;
static int	sdb_snapshot_parallelism = 0;
static int	sdb_source_decoding_work_mem = 1024;
static int	sdb_new_table_check_interval;
static int	sdb_sequence_sync_interval;
static bool sdb_replicate_drop_table = true;
static int	sdb_batch_size = 5000;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool sdb_shmem_ready = false;

/* What the launcher hands a worker through bgw_extra. */
typedef struct SdbWorkerExtra
{
	Oid			dboid;
	Oid			userid;
	/* the transaction that started it, if it had an xid (see sdb_wait_launcher) */
	TransactionId launcher_xid;
	/* start even when that transaction rolls back (SDB_START_AT_END) */
	bool		start_on_abort;
	char		mode[24];
	char		name[64];
} SdbWorkerExtra;

StaticAssertDecl(sizeof(SdbWorkerExtra) <= BGW_EXTRALEN, "bgw_extra too small");

PGDLLEXPORT void synchdb_worker_main(Datum main_arg);
PGDLLEXPORT void synchdb_helper_main(Datum main_arg);
StaticAssertDecl(sizeof(SdbHelperExtra) <= BGW_EXTRALEN, "bgw_extra too small for a helper");
#if PG_VERSION_NUM < 160000
void		_PG_init(void);
#endif

static void
sdb_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(synchdb_shmem_size(sdb_max_connector_workers));
}

static void
sdb_shmem_startup(void)
{
	bool		found;
	void	   *base;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	base = ShmemInitStruct("synchdb state", synchdb_shmem_size(sdb_max_connector_workers), &found);
	synchdb_shmem_init(base, sdb_max_connector_workers, found);
	LWLockRelease(AddinShmemInitLock);
	sdb_shmem_ready = true;
}

/* -1, or what the source accepts for logical_decoding_work_mem (64kB and up) */
static bool
sdb_check_decoding_work_mem(int *newval, void **extra, GucSource source)
{
	if (*newval == -1 || *newval >= 64)
		return true;
	GUC_check_errdetail("It is -1 (the source's own setting) or at least 64kB, the least a source accepts.");
	return false;
}

int
sdb_sequence_sync_interval_ms(void)
{
	return sdb_sequence_sync_interval;
}

void
_PG_init(void)
{
	DefineCustomIntVariable("synchdb.max_connector_workers",
							"Maximum number of connectors that can run at once.",
							NULL, &sdb_max_connector_workers, 30, 1, 1024,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("synchdb.naptime",
							"Longest time a connector waits before it checks for work again.",
							NULL, &sdb_naptime, 100, 1, 60000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("synchdb.batch_size",
							"Changes applied per destination transaction (whole source transactions are never split).",
							NULL, &sdb_batch_size, 5000, 1, 10000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("synchdb.new_table_check_interval",
							"How often a streaming connector looks for tables new on the source (0: never).",
							NULL, &sdb_new_table_check_interval, 5000, 0, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("synchdb.sequence_sync_interval",
							"How often a streaming connector brings the destination's sequences to the source's values (0: only when it stops).",
							NULL, &sdb_sequence_sync_interval, 5000, 0, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("synchdb.snapshot_parallelism",
							"Tables, or page ranges of a large table, an initial snapshot copies at once (0: one per CPU, at least 2, at most 8; 1: one at a time).",
							NULL, &sdb_snapshot_parallelism, 0, 0, 64,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("synchdb.source_decoding_work_mem",
							"logical_decoding_work_mem of the source's walsender serving a connector: past it, a running transaction is sent in parts and applied before its commit (-1: the source's own setting).",
							NULL, &sdb_source_decoding_work_mem, 1024, -1, MAX_KILOBYTES,
							PGC_SIGHUP, GUC_UNIT_KB, sdb_check_decoding_work_mem, NULL, NULL);
	DefineCustomBoolVariable("synchdb.replicate_drop_table",
							 "Whether a table dropped on the source is dropped on the destination too.",
							 NULL, &sdb_replicate_drop_table, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	sdb_define_apply_gucs();
	sdb_launcher_init();
	MarkGUCPrefixReserved("synchdb");

	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = sdb_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = sdb_shmem_startup;
}

static void
sdb_require_shmem(void)
{
	if (!sdb_shmem_ready)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("synchdb is not loaded at server start"),
				 errhint("Add synchdb to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/* ------------------------------------------------------------ SQL functions */

PG_FUNCTION_INFO_V1(synchdb_encrypt_secret_sql);
Datum
synchdb_encrypt_secret_sql(PG_FUNCTION_ARGS)
{
	char	   *plain = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char		out[1024];

	if (synchdb_encrypt_secret(DataDir, plain, out, sizeof(out)) < 0)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not store the password: %s", out)));
	memset(plain, 0, strlen(plain));
	PG_RETURN_TEXT_P(cstring_to_text(out));
}


/*
 * Every synchdb background worker: shared memory and a database connection,
 * started once recovery is done, never restarted by the postmaster (a stopped
 * connector stays stopped). The caller sets name, argument, notify pid, extra.
 */
void
sdb_init_bgw(BackgroundWorker *bgw, const char *function, const char *type)
{
	memset(bgw, 0, sizeof(*bgw));
	bgw->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw->bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw->bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw->bgw_library_name, BGW_MAXLEN, "synchdb");
	snprintf(bgw->bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(bgw->bgw_type, BGW_MAXLEN, "%s", type);
}

/*
 * Starts the worker of connector `name` of database `dboid`, running as `userid`,
 * and waits until it has started; returns its pid. ERROR when it cannot start.
 * Used by synchdb_launch and by the auto-launcher (launcher.c).
 */
int
sdb_register_connector_worker(Oid dboid, Oid userid, const char *name, const char *mode,
							  SdbStartWhen when)
{
	char		err[512];
	int			slot;
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;
	SdbWorkerExtra extra;
	pid_t		pid;
	BgwHandleStatus status;

	sdb_require_shmem();
	if (strlen(name) >= sizeof(extra.name) || strlen(mode) >= sizeof(extra.mode))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("connector name or mode too long")));
	slot = synchdb_slot_acquire(dboid, name, err, sizeof(err));
	if (slot < 0)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE), errmsg("%s", err)));

	memset(&extra, 0, sizeof(extra));
	extra.dboid = dboid;
	extra.userid = userid;
	extra.launcher_xid = when == SDB_START_NOW ? InvalidTransactionId : GetTopTransactionIdIfAny();
	extra.start_on_abort = when == SDB_START_AT_END;
	strlcpy(extra.mode, mode, sizeof(extra.mode));
	strlcpy(extra.name, name, sizeof(extra.name));

	sdb_init_bgw(&bgw, "synchdb_worker_main", "synchdb connector");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "synchdb connector %s", name);
	bgw.bgw_main_arg = Int32GetDatum(slot);
	bgw.bgw_notify_pid = MyProcPid;
	memcpy(bgw.bgw_extra, &extra, sizeof(extra));

	if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
	{
		synchdb_worker_exiting(slot);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start connector \"%s\": no background worker slot is free", name),
				 errhint("Raise max_worker_processes, or stop another connector.")));
	}
	status = WaitForBackgroundWorkerStartup(handle, &pid);
	if (status != BGWH_STARTED)
	{
		synchdb_worker_exiting(slot);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("could not start connector \"%s\": the background worker did not start", name),
				 errhint("See the server log.")));
	}
	synchdb_slot_set_pid(slot, pid);
	return (int) pid;
}

/*
 * The role connectors run as: the extension's owner, as the auto-launcher
 * starts them (launcher.c), so that what a connector creates on the destination
 * has one owner however it was started. The caller when that role cannot log
 * in (a background worker connects as a login role).
 */
static Oid
sdb_connector_role(void)
{
	Oid			role = GetUserId();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT e.extowner FROM pg_catalog.pg_extension e"
					"  JOIN pg_catalog.pg_roles r ON r.oid = e.extowner"
					" WHERE e.extname = 'synchdb' AND r.rolcanlogin", true, 1) == SPI_OK_SELECT
		&& SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			role = DatumGetObjectId(d);
	}
	SPI_finish();
	return role;
}

/*
 * synchdb_caller(): the role the session acts as (SET ROLE included), also
 * inside SECURITY DEFINER functions, which change only the current user.
 */
PG_FUNCTION_INFO_V1(synchdb_caller);
Datum
synchdb_caller(PG_FUNCTION_ARGS)
{
	PG_RETURN_OID(GetOuterUserId());
}

/*
 * synchdb_launch(name, mode, at_commit, at_end): starts a connector's worker;
 * returns its pid. at_commit: the worker waits for the caller's transaction to
 * end and does nothing if it rolls back (a start undone). at_end: it waits for
 * that end and starts either way (a restart whose caller also wrote what the
 * worker reads). Neither for a caller that waits for the worker itself before
 * it commits. (Each is read only when the SQL declaration has it: a
 * database whose extension script predates it calls with fewer arguments.)
 */
PG_FUNCTION_INFO_V1(synchdb_launch);
Datum
synchdb_launch(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *mode = text_to_cstring(PG_GETARG_TEXT_PP(1));
	bool		at_commit = PG_NARGS() > 2 && PG_GETARG_BOOL(2);
	bool		at_end = PG_NARGS() > 3 && PG_GETARG_BOOL(3);
	SdbStartWhen when = at_end ? SDB_START_AT_END : at_commit ? SDB_START_AT_COMMIT : SDB_START_NOW;

	PG_RETURN_INT32(sdb_register_connector_worker(MyDatabaseId, sdb_connector_role(), name, mode,
												  when));
}

/*
 * synchdb_terminate(name, timeout_ms): asks a connector's worker to stop and waits
 * until it has gone. Returns the pid it stopped, 0 if it was not running.
 */
PG_FUNCTION_INFO_V1(synchdb_terminate);
Datum
synchdb_terminate(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int			timeout_ms = PG_GETARG_INT32(1);
	int			slot;
	int			pid;
	int			waited = 0;

	sdb_require_shmem();
	slot = synchdb_slot_find(MyDatabaseId, name);
	if (slot < 0)
		PG_RETURN_INT32(0);
	pid = synchdb_slot_pid(slot);
	if (pid <= 0)
		PG_RETURN_INT32(0);
	if (kill(pid, SIGTERM) != 0)
	{
		/* the process is gone already */
		synchdb_worker_exiting(slot);
		PG_RETURN_INT32(0);
	}
	while (synchdb_slot_pid(slot) == pid)
	{
		if (waited >= timeout_ms)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("connector \"%s\" (pid %d) did not stop within %d ms", name, pid, timeout_ms)));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		waited += 10;
	}
	PG_RETURN_INT32(pid);
}

/* synchdb_forget(name): drops the state slot of a deleted connector. */
PG_FUNCTION_INFO_V1(synchdb_forget);
Datum
synchdb_forget(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (sdb_shmem_ready)
		synchdb_slot_release(MyDatabaseId, name);
	PG_RETURN_VOID();
}

/* synchdb_origin_name(name): the replication origin of a connector. */
PG_FUNCTION_INFO_V1(synchdb_origin_name_sql);
Datum
synchdb_origin_name_sql(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char		out[NAMEDATALEN];

	synchdb_origin_name(MyDatabaseId, name, out, sizeof(out));
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/*
 * synchdb_compile_transform(expr, as_text, typed): the SQL of a transform rule
 * with %d replaced by the given placeholders (see src/objmap.rs).
 */
PG_FUNCTION_INFO_V1(synchdb_compile_transform_sql);
Datum
synchdb_compile_transform_sql(PG_FUNCTION_ARGS)
{
	char	   *expr = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *as_text = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *typed = text_to_cstring(PG_GETARG_TEXT_PP(2));
	/* each %d (at most one per two characters) grows by a placeholder and "( ) || " */
	size_t		len = strlen(expr) * (strlen(as_text) + strlen(typed) + 16) + 256;
	char	   *out = palloc(len);

	if (synchdb_compile_transform(expr, as_text, typed, out, len) != 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("%s", out),
						errhint("Write the transform as an SQL expression in which %%d stands for the incoming value, e.g. '>>' || '%%d' or %%d + 500.")));
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/*
 * synchdb_drop_source(name, data): drops the connector's slot and publication on
 * its source. Returns NULL on success, else the reason (with what to do by hand).
 */
PG_FUNCTION_INFO_V1(synchdb_drop_source);
Datum
synchdb_drop_source(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *data = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char		err[2048];

	if (synchdb_drop_source_objects(DataDir, GetSystemIdentifier(), MyDatabaseId, name, data,
									err, sizeof(err)) == 0)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(err));
}

/*
 * synchdb_source_sequences(name, data, seqs): the last values of the sequences
 * named in seqs (one per line) on the connector's source, as JSON text.
 */
PG_FUNCTION_INFO_V1(synchdb_source_sequences_sql);
Datum
synchdb_source_sequences_sql(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *data = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *seqs = text_to_cstring(PG_GETARG_TEXT_PP(2));
	size_t		len = 8192;
	char	   *out = palloc(len);
	int64_t		need;

	need = synchdb_source_sequences(DataDir, GetSystemIdentifier(), MyDatabaseId, name, data, seqs,
									out, len);
	if (need >= (int64_t) len)
	{
		/* the values did not fit: ask again with room for them */
		len = (size_t) need + 1;
		out = repalloc(out, len);
		need = synchdb_source_sequences(DataDir, GetSystemIdentifier(), MyDatabaseId, name, data,
										seqs, out, len);
	}
	if (need < 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("cannot read the sequences of connector \"%s\" on its source: %s", name, out)));
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/*
 * synchdb_send_command(name, cmd): posts a request to a running worker and wakes
 * it (SIGUSR1 sets a background worker's latch). Returns its pid, 0 if not running.
 */
PG_FUNCTION_INFO_V1(synchdb_send_command);
Datum
synchdb_send_command(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int32		cmd = PG_GETARG_INT32(1);
	int			pid;

	sdb_require_shmem();
	pid = synchdb_slot_command(MyDatabaseId, name, (uint32) cmd);
	if (pid > 0)
		(void) kill(pid, SIGUSR1);
	PG_RETURN_INT32(pid);
}

/* synchdb_stats_rows(): every counter of this database's connectors. */
PG_FUNCTION_INFO_V1(synchdb_stats_rows);
Datum
synchdb_stats_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			n;
	int			i;
	int			j;

	InitMaterializedSRF(fcinfo, 0);
	if (!sdb_shmem_ready)
		return (Datum) 0;
	n = synchdb_slot_count();
	for (i = 0; i < n; i++)
	{
		char		name[64];
		uint64_t	vals[SDB_NSTATS];
		Datum		values[SDB_NSTATS + 1];
		bool		nulls[SDB_NSTATS + 1];

		if (!synchdb_stats_read(i, MyDatabaseId, name, vals))
			continue;
		name[sizeof(name) - 1] = '\0';
		memset(nulls, 0, sizeof(nulls));
		values[0] = CStringGetTextDatum(name);
		for (j = 0; j < SDB_NSTATS; j++)
			values[j + 1] = Int64GetDatum((int64) vals[j]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(synchdb_reset_stats_c);
Datum
synchdb_reset_stats_c(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	PG_RETURN_BOOL(sdb_shmem_ready && synchdb_stats_reset(MyDatabaseId, name));
}

/* synchdb_parse_offset(text): the LSN an offset (JSON or LSN text) names. */
PG_FUNCTION_INFO_V1(synchdb_parse_offset_sql);
Datum
synchdb_parse_offset_sql(PG_FUNCTION_ARGS)
{
	char	   *input = text_to_cstring(PG_GETARG_TEXT_PP(0));
	uint64_t	lsn = 0;
	char		err[512];

	if (synchdb_parse_offset(input, &lsn, err, sizeof(err)) != 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("%s", err)));
	PG_RETURN_LSN((XLogRecPtr) lsn);
}

/* synchdb_check_offset(name, data, lsn): NULL if the source's slot serves lsn, else why not. */
PG_FUNCTION_INFO_V1(synchdb_check_offset_sql);
Datum
synchdb_check_offset_sql(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *data = text_to_cstring(PG_GETARG_TEXT_PP(1));
	XLogRecPtr	lsn = PG_GETARG_LSN(2);
	char		err[2048];

	if (synchdb_check_offset(DataDir, GetSystemIdentifier(), MyDatabaseId, name, data, lsn,
							 err, sizeof(err)) == 0)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(err));
}

/* synchdb_state_rows(): the shared-memory state of this database's connectors. */
PG_FUNCTION_INFO_V1(synchdb_state_rows);
Datum
synchdb_state_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			n;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (!sdb_shmem_ready)
		return (Datum) 0;
	n = synchdb_slot_count();
	for (i = 0; i < n; i++)
	{
		SdbStateRow row;
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};

		if (!synchdb_state_read(i, MyDatabaseId, &row))
			continue;
		values[0] = CStringGetTextDatum(row.name);
		values[1] = Int32GetDatum(row.pid);
		values[2] = CStringGetTextDatum(row.stage);
		values[3] = CStringGetTextDatum(row.state);
		values[4] = CStringGetTextDatum(row.err);
		values[5] = CStringGetTextDatum(row.offset);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* ------------------------------------------------------------ the worker */

static void
sdb_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	sdb_got_sigterm = true;
	/* cancel whatever PostgreSQL work is running, so that we stop promptly */
	InterruptPending = true;
	QueryCancelPending = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

static void
sdb_worker_on_exit(int code, Datum arg)
{
	/*
	 * Let go of the replication origin before the slot says stopped.
	 * PostgreSQL releases it in a later exit callback (on_shmem_exit), and a
	 * user who sees the connector stopped may move its origin at once, as the
	 * worker's errors advise ("already active for PID" otherwise). The open
	 * transaction, if any, was aborted by ShutdownPostgres, which runs before
	 * this (registered after it).
	 */
	if (replorigin_session_origin != InvalidRepOriginId)
	{
		replorigin_session_reset();
		replorigin_session_origin = InvalidRepOriginId;
	}
	synchdb_worker_exiting(DatumGetInt32(arg));
}

/*
 * What a connector's worker and its copy helpers do first: their signal
 * handlers, then the connection to the database as the connector's role.
 */
static void
sdb_bgworker_start(Oid dboid, Oid userid, const char *appname)
{
	pqsignal(SIGTERM, sdb_sigterm);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, userid, 0);
	pgstat_report_appname(appname);
}

/*
 * The transaction that started this worker may still be open: what it wrote
 * (the connector's row when synchdb_add_conninfo ran in it too, isactive,
 * last_mode, the rules and renames of synchdb_reload_objmap) is visible here
 * only once it commits. Waits for its end; false when it rolled back and that
 * undoes the start as well (not for a restart: start_on_abort).
 */
static bool
sdb_wait_launcher(TransactionId xid, bool start_on_abort, const char *name)
{
	int			waited = 0;

	if (!TransactionIdIsValid(xid))
		return true;
	/* usually it commits at once: say so only when it stays open */
	while (TransactionIdIsInProgress(xid))
	{
		if (++waited == 100)
			ereport(LOG,
					(errmsg("synchdb: connector %s: waiting for the transaction that started it (xid %u) to end",
							name, xid)));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		if (sdb_got_sigterm)
			return false;
	}
	if (TransactionIdDidCommit(xid))
		return true;
	if (start_on_abort)
	{
		ereport(LOG,
				(errmsg("synchdb: connector %s: the transaction that restarted it was rolled back; it runs as before",
						name)));
		return true;
	}
	ereport(LOG,
			(errmsg("synchdb: connector %s: not started: the transaction that started it was rolled back",
					name)));
	return false;
}

void
synchdb_worker_main(Datum main_arg)
{
	int			slot = DatumGetInt32(main_arg);
	SdbWorkerExtra extra;
	SdbPgOps	ops;
	int			rc;

	memcpy(&extra, MyBgworkerEntry->bgw_extra, sizeof(extra));
	before_shmem_exit(sdb_worker_on_exit, Int32GetDatum(slot));
	synchdb_slot_set_pid(slot, MyProcPid);
	sdb_bgworker_start(extra.dboid, extra.userid, "synchdb");
	if (!sdb_wait_launcher(extra.launcher_xid, extra.start_on_abort, extra.name))
		proc_exit(0);

	sdb_init_ops(&ops);
	rc = synchdb_worker_run(&ops, slot, extra.name, extra.mode);
	proc_exit(rc == 0 ? 0 : 1);
}

/*
 * A copy helper of a connector's snapshot: copies the items of the connector's
 * work list (synchdb_copy_work) until none is left, then exits.
 */
void
synchdb_helper_main(Datum main_arg)
{
	SdbHelperExtra extra;
	SdbPgOps	ops;
	int			rc;

	memcpy(&extra, MyBgworkerEntry->bgw_extra, sizeof(extra));
	sdb_bgworker_start(extra.dboid, extra.userid, "synchdb copy helper");

	sdb_init_ops(&ops);
	rc = synchdb_helper_run(&ops, extra.parent_slot, extra.name, DatumGetInt32(main_arg));
	proc_exit(rc == 0 ? 0 : 1);
}
