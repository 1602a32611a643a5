/*
 * launcher.c — the auto-launcher: after a server start, every connector that was
 * running (synchdb_conninfo.isactive) is started again, in every database that has
 * the extension, in the snapshot mode it was last started with (data->>'last_mode').
 * A connector resumes from its replication origin, so this continues exactly where
 * it stopped; 'initial_only' comes back idle and 'schemasync' comes back paused, as
 * a start in those modes does once the snapshot is done.
 *
 * Two kinds of processes, plain PostgreSQL C (no Rust is called here, so
 * ereport/longjmp are as safe as anywhere in a backend):
 *
 *   "synchdb auto-launcher"  static, registered from _PG_init when synchdb is in
 *       shared_preload_libraries and synchdb.synchdb_auto_launcher is on. Connected
 *       to no database, it reads pg_database (a shared catalog) and, one database
 *       at a time, starts a per-database worker and waits for it to exit. Then it
 *       stays, idle, until the server stops. That is what brings connectors back
 *       after a crash: when any backend crashes, the postmaster kills every
 *       process and reinitializes, and it forgets workers registered never to
 *       restart (connector workers, and a launcher that had exited); a static
 *       worker with a restart time is started again at once, so this one runs
 *       again and relaunches every active connector, which resumes from its
 *       replication origin (committed with the data it applied, so crash-safe).
 *   "synchdb auto-launcher for database X"  dynamic: connects to X, finds the
 *       extension and its active connectors, starts each connector's worker (the
 *       same registration as synchdb_start_engine_bgw) unless it runs already,
 *       and exits.
 *
 * Connectors run as the extension's owner. The extension is not trusted, so its
 * owner is the superuser who created it; that role owns synchdb_conninfo and the
 * schemas and tables a connector creates when that role starts it, so a restart
 * changes nobody's ownership or privileges. The bootstrap superuser would work too,
 * but would silently run connectors as a role the DBA may have chosen not to use.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

#include "synchdb_shim.h"

#define SDB_LAUNCHER_TYPE "synchdb auto-launcher"

/*
 * Seconds before the postmaster starts the launcher again if it exits with an
 * error (after a crash it is started at once). It exits 0 only at shutdown.
 */
#define SDB_LAUNCHER_RESTART_SECS 10

static bool sdb_auto_launcher = true;

PGDLLEXPORT void synchdb_auto_launcher_main(Datum main_arg);
PGDLLEXPORT void synchdb_db_launcher_main(Datum main_arg);

typedef struct SdbDatabase
{
	Oid			oid;
	char		name[NAMEDATALEN];
} SdbDatabase;

typedef struct SdbActiveConnector
{
	char	   *name;
	char	   *mode;
} SdbActiveConnector;

/*
 * Called from _PG_init before the "synchdb" GUC prefix is reserved (so that a
 * value from postgresql.conf is taken, not discarded). The setting only matters
 * at server start, hence PGC_POSTMASTER, which can be defined only while the
 * library is preloaded (SynchDB does the same).
 */
void
sdb_launcher_init(void)
{
	BackgroundWorker bgw;

	if (!process_shared_preload_libraries_in_progress)
		return;
	DefineCustomBoolVariable("synchdb.synchdb_auto_launcher",
							 "Starts again, at server start and after a crash, every connector that was running.",
							 "Only works when synchdb is in shared_preload_libraries.",
							 &sdb_auto_launcher, true,
							 PGC_POSTMASTER, 0, NULL, NULL, NULL);
	if (!sdb_auto_launcher)
		return;

	sdb_init_bgw(&bgw, "synchdb_auto_launcher_main", SDB_LAUNCHER_TYPE);
	snprintf(bgw.bgw_name, BGW_MAXLEN, SDB_LAUNCHER_TYPE);
	bgw.bgw_restart_time = SDB_LAUNCHER_RESTART_SECS;
	bgw.bgw_main_arg = (Datum) 0;
	bgw.bgw_notify_pid = 0;
	RegisterBackgroundWorker(&bgw);
}

/*
 * In a PG_CATCH block: reports the error as a WARNING that starts with what failed
 * (fmt, ...), and leaves a clean state (no transaction, no SPI, memory context
 * `cxt`) so that the caller can go on with the next database or connector. The
 * arguments must not live in transaction memory: it is freed here.
 */
static void sdb_warn_caught(MemoryContext cxt, const char *fmt,...) pg_attribute_printf(2, 3);

static void
sdb_warn_caught(MemoryContext cxt, const char *fmt,...)
{
	ErrorData  *edata;
	StringInfoData what;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	AbortOutOfAnyTransaction();
	MemoryContextSwitchTo(cxt);

	initStringInfo(&what);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&what, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&what, needed);
	}
	ereport(WARNING,
			(errcode(edata->sqlerrcode),
			 errmsg("synchdb: %s: %s", what.data, edata->message),
			 edata->detail ? errdetail("%s", edata->detail) : 0,
			 edata->hint ? errhint("%s", edata->hint) : 0));
	FreeErrorData(edata);
	pfree(what.data);
}

/* ------------------------------------------------------------ per database */

/*
 * Reads, in the current database, the extension's owner and the active connectors
 * with the mode each was last started in. Returns false when the extension is not
 * installed here. Runs in its own transaction; results are allocated in `cxt`.
 */
static bool
sdb_read_active_connectors(MemoryContext cxt, Oid *owner, char **owner_name, bool *owner_can_login,
						   SdbActiveConnector **conns, int *nconns)
{
	bool		installed = false;
	StringInfoData sql;
	uint64		i;

	*nconns = 0;
	*conns = NULL;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "synchdb: reading the active connectors");

	if (SPI_execute("SELECT e.extowner, r.rolname, r.rolcanlogin, n.nspname"
					"  FROM pg_catalog.pg_extension e"
					"  JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace"
					"  JOIN pg_catalog.pg_roles r ON r.oid = e.extowner"
					" WHERE e.extname = 'synchdb'", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_extension");
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		char	   *nsp;

		installed = true;
		*owner = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
		*owner_name = MemoryContextStrdup(cxt, SPI_getvalue(tup, desc, 2));
		*owner_can_login = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
		nsp = SPI_getvalue(tup, desc, 4);

		initStringInfo(&sql);
		appendStringInfo(&sql,
						 "SELECT name, coalesce(nullif(data->>'last_mode', ''), 'initial')"
						 "  FROM %s.synchdb_conninfo WHERE isactive ORDER BY name",
						 quote_identifier(nsp));
		if (SPI_execute(sql.data, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read synchdb_conninfo");
		if (SPI_processed > 0)
			*conns = MemoryContextAllocZero(cxt, sizeof(SdbActiveConnector) * SPI_processed);
		for (i = 0; i < SPI_processed; i++)
		{
			tup = SPI_tuptable->vals[i];
			desc = SPI_tuptable->tupdesc;
			(*conns)[i].name = MemoryContextStrdup(cxt, SPI_getvalue(tup, desc, 1));
			(*conns)[i].mode = MemoryContextStrdup(cxt, SPI_getvalue(tup, desc, 2));
		}
		*nconns = (int) SPI_processed;
	}

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	return installed;
}

/*
 * Entry point of the per-database worker; main_arg is the database's OID,
 * bgw_extra its name (for messages).
 */
void
synchdb_db_launcher_main(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	MemoryContext cxt;
	Oid			owner = InvalidOid;
	char	   *owner_name = NULL;
	bool		owner_can_login = false;
	char		dbname[NAMEDATALEN];
	SdbActiveConnector *conns = NULL;
	int			nconns = 0;
	bool		installed = false;
	int			i;

	strlcpy(dbname, MyBgworkerEntry->bgw_extra, sizeof(dbname));
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	/* as the bootstrap superuser: it can read every catalog and the connector table */
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("synchdb");

	cxt = AllocSetContextCreate(TopMemoryContext, "synchdb auto-launcher", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);

	PG_TRY();
	{
		installed = sdb_read_active_connectors(cxt, &owner, &owner_name, &owner_can_login,
											   &conns, &nconns);
	}
	PG_CATCH();
	{
		sdb_warn_caught(cxt, "could not read the connectors of database \"%s\"", dbname);
		proc_exit(0);
	}
	PG_END_TRY();

	if (!installed || nconns == 0)
		proc_exit(0);
	if (!owner_can_login)
	{
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("synchdb: cannot auto-launch the %d connector(s) of database \"%s\": "
						"the extension's owner \"%s\" cannot log in", nconns, dbname, owner_name),
				 errhint("Connectors run as the extension's owner: ALTER ROLE %s LOGIN, "
						 "or start them by hand with synchdb_start_engine_bgw().",
						 quote_identifier(owner_name))));
		proc_exit(0);
	}

	for (i = 0; i < nconns; i++)
	{
		const char *name = conns[i].name;
		const char *mode = conns[i].mode;

		int			slot;

		CHECK_FOR_INTERRUPTS();
		/* the launcher may run again while connectors run (after its own error) */
		slot = synchdb_slot_find(dboid, name);
		if (slot >= 0 && synchdb_slot_pid(slot) != 0)
			continue;
		ereport(LOG,
				(errmsg("synchdb: auto-launching connector \"%s\" in database \"%s\" (snapshot mode \"%s\")",
						name, dbname, mode)));
		PG_TRY();
		{
			(void) sdb_register_connector_worker(dboid, owner, name, mode, SDB_START_NOW);
		}
		PG_CATCH();
		{
			/* e.g. no free connector or worker slot: the others may still fit */
			sdb_warn_caught(cxt, "could not auto-launch connector \"%s\" in database \"%s\"",
							name, dbname);
		}
		PG_END_TRY();
	}
	proc_exit(0);
}

/* ------------------------------------------------------------ the launcher */

/* Connectable databases (template0 and databases being dropped are not). */
static List *
sdb_database_list(MemoryContext cxt)
{
	List	   *dbs = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database form = (Form_pg_database) GETSTRUCT(tup);
		SdbDatabase *db;
		MemoryContext old;

		if (!form->datallowconn)
			continue;
#ifdef DATCONNLIMIT_INVALID_DB
		if (form->datconnlimit == DATCONNLIMIT_INVALID_DB)
			continue;
#endif
		old = MemoryContextSwitchTo(cxt);
		db = palloc0(sizeof(SdbDatabase));
		db->oid = form->oid;
		strlcpy(db->name, NameStr(form->datname), NAMEDATALEN);
		dbs = lappend(dbs, db);
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return dbs;
}

/* Starts the per-database worker of `db` and waits until it has exited. */
static void
sdb_launch_in_database(const SdbDatabase *db)
{
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;
	BgwHandleStatus status;
	pid_t		pid;

	sdb_init_bgw(&bgw, "synchdb_db_launcher_main", SDB_LAUNCHER_TYPE);
	snprintf(bgw.bgw_name, BGW_MAXLEN, SDB_LAUNCHER_TYPE " for database %s", db->name);
	bgw.bgw_main_arg = ObjectIdGetDatum(db->oid);
	bgw.bgw_notify_pid = MyProcPid;
	StaticAssertStmt(NAMEDATALEN <= BGW_EXTRALEN, "bgw_extra cannot hold a database name");
	strlcpy(bgw.bgw_extra, db->name, NAMEDATALEN);

	if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("synchdb: cannot auto-launch the connectors of database \"%s\": "
						"no background worker slot is free", db->name),
				 errhint("Raise max_worker_processes.")));
		return;
	}
	status = WaitForBackgroundWorkerStartup(handle, &pid);
	if (status == BGWH_STARTED)
		status = WaitForBackgroundWorkerShutdown(handle);
	if (status == BGWH_POSTMASTER_DIED)
		proc_exit(1);
	pfree(handle);
}

/* Entry point of the static auto-launcher worker. */
void
synchdb_auto_launcher_main(Datum main_arg)
{
	MemoryContext cxt;
	List	   *dbs;
	ListCell   *lc;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	/* no database: pg_database is a shared catalog, readable without one */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	cxt = AllocSetContextCreate(TopMemoryContext, "synchdb auto-launcher", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);
	dbs = sdb_database_list(cxt);
	MemoryContextSwitchTo(cxt);

	foreach(lc, dbs)
	{
		SdbDatabase *db = (SdbDatabase *) lfirst(lc);

		CHECK_FOR_INTERRUPTS();
		PG_TRY();
		{
			sdb_launch_in_database(db);
		}
		PG_CATCH();
		{
			sdb_warn_caught(cxt, "could not auto-launch the connectors of database \"%s\"",
							db->name);
		}
		PG_END_TRY();
	}

	/*
	 * Stay until shutdown, so that the postmaster starts this worker again after
	 * a crash (see the top of this file). Exit 0 on SIGTERM: a worker that exits
	 * 0 is not restarted.
	 */
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	pgstat_report_activity(STATE_IDLE, NULL);
	while (!ShutdownRequestPending)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	proc_exit(0);
}
