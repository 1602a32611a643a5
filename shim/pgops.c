/*
 * pgops.c — the PostgreSQL operations the Rust core calls (SdbPgOps).
 *
 * Every operation runs its body under PG_TRY: an ERROR becomes a return code and a
 * saved message, never a longjmp through a Rust frame. After a failed operation the
 * caller aborts the transaction with op_xact_abort.
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "commands/copy.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/nodeModifyTable.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "replication/origin.h"
#include "storage/bufmgr.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#if PG_VERSION_NUM >= 180000
#include "storage/waiteventset.h"
#endif
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/typcache.h"

#include "synchdb_shim.h"

static char sdb_errmsg[4096];
static char sdb_sqlstate[6];

/* Set by the SIGTERM handler of the worker. */
volatile sig_atomic_t sdb_got_sigterm = false;

/* Saves the current error (we are in PG_CATCH) and clears the error state. */
static void
sdb_save_error(MemoryContext cxt)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	if (edata->detail)
		snprintf(sdb_errmsg, sizeof(sdb_errmsg), "%s DETAIL: %s", edata->message, edata->detail);
	else
		snprintf(sdb_errmsg, sizeof(sdb_errmsg), "%s", edata->message ? edata->message : "unknown error");
	strlcpy(sdb_sqlstate, unpack_sql_state(edata->sqlerrcode), sizeof(sdb_sqlstate));
	FreeErrorData(edata);
}

#define SDB_TRY_BEGIN \
	MemoryContext sdb_cxt = CurrentMemoryContext; \
	int			sdb_rc = 0; \
	PG_TRY(); \
	{

#define SDB_TRY_END \
	} \
	PG_CATCH(); \
	{ \
		sdb_save_error(sdb_cxt); \
		sdb_rc = -1; \
	} \
	PG_END_TRY(); \
	return sdb_rc;

static const char *
op_last_error(void)
{
	return sdb_errmsg;
}

static const char *
op_last_sqlstate(void)
{
	return sdb_sqlstate;
}

static void
op_log(int level, const char *msg)
{
	int			elevel = level == SDB_LOG_WARNING ? WARNING : level == SDB_LOG_LOG ? LOG : DEBUG1;
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		ereport(elevel, (errmsg_internal("synchdb: %s", msg)));
	}
	PG_CATCH();
	{
		sdb_save_error(cxt);
	}
	PG_END_TRY();
}

/* ------------------------------------------------------------ relations (apply) */

/*
 * A destination table as the apply path needs it. The lookup data lives as long as
 * the worker; the executor state is built on the first change of a transaction and
 * released before commit (or dropped with the transaction on abort).
 */
typedef struct SdbRel
{
	Oid			relid;
	int			natts;
	FmgrInfo   *infuncs;
	Oid		   *typioparams;
	int32	   *typmods;
	char	   *qualname;

	bool		open;
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	EPQState	epq;
	Oid			idxoid;
	/* unique indexes (and unique constraints), for multiple_unique_conflicts */
	int			nunique;
	TupleTableSlot *remoteslot;
	TupleTableSlot *localslot;

	/*
	 * Inserts gathered for one table_multi_insert (sdb_flush_inserts): one WAL
	 * record and one buffer lock per heap page instead of per row, as COPY
	 * does. Only where nothing can watch the rows one by one (sdb_can_buffer).
	 */
	bool		bufferable;
	TupleTableSlot **bufslots;	/* SDB_BUF_ROWS, made when first needed */
	int			nbuf;
	Size		bufbytes;

	/*
	 * Where the next row to change is looked for first (sdb_guess_row): the
	 * row after the one found last. Per executor state; guessing stops after
	 * SDB_GUESS_MISSES misses in a row.
	 */
	IndexFetchTableData *fetch; /* made when first needed */
	BlockNumber nblocks;		/* the table's size then: a guess stays below */
	ItemPointerData lasttid;
	int			misses;
	int			nkeys;			/* the replica identity index's columns */
	AttrNumber	keyattrs[INDEX_MAX_KEYS];

	/*
	 * Where the rows this transaction wrote are now (sdb_recall_row): made when
	 * the first is written, SDB_RECENT_ROWS entries.
	 */
	struct SdbRecentRow *recent;
} SdbRel;

/*
 * A row written in this transaction: its key's hash (sdb_key_hash) and the TID
 * of the version written, in a direct-mapped table of SDB_RECENT_ROWS entries.
 */
typedef struct SdbRecentRow
{
	uint32		hash;
	ItemPointerData tid;
} SdbRecentRow;

#define SDB_RECENT_ROWS 256

#define SDB_GUESS_MISSES 16

/* COPY's limits for one multi-insert: rows, and bytes of their values */
#define SDB_BUF_ROWS 1000
#define SDB_BUF_BYTES 65535

static List *sdb_open_rels = NIL;

/* the one table with buffered inserts, if any */
static SdbRel *sdb_pending = NULL;

/* the buffered row whose index entries were being made, for error reports */
static int	sdb_flush_row = -1;

static bool sdb_can_buffer(SdbRel *r);
static void sdb_flush_inserts(void);

static void
sdb_rel_exec_begin(SdbRel *r)
{
	EState	   *estate;
	MemoryContext oldcxt;
	RangeTblEntry *rte;
	TupleDesc	desc;
#if PG_VERSION_NUM >= 160000
	List	   *perminfos = NIL;
#endif

	if (r->open)
		return;

	r->rel = table_open(r->relid, RowExclusiveLock);
	desc = RelationGetDescr(r->rel);
	if (desc->natts != r->natts)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("destination table %s changed while the connector was running", r->qualname),
				 errhint("Restart the connector.")));
	r->idxoid = RelationGetReplicaIndex(r->rel);

	estate = CreateExecutorState();
	oldcxt = MemoryContextSwitchTo(estate->es_query_cxt);
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = r->relid;
	rte->relkind = r->rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
#if PG_VERSION_NUM >= 180000
	addRTEPermissionInfo(&perminfos, rte);
	ExecInitRangeTable(estate, list_make1(rte), perminfos, bms_make_singleton(1));
#elif PG_VERSION_NUM >= 160000
	addRTEPermissionInfo(&perminfos, rte);
	ExecInitRangeTable(estate, list_make1(rte), perminfos);
#else
	ExecInitRangeTable(estate, list_make1(rte));
#endif
	r->rri = makeNode(ResultRelInfo);
	ExecInitResultRelation(estate, r->rri, 1);
	/* with what a uniqueness check needs (sdb_check_unique_conflicts) */
	ExecOpenIndices(r->rri, true);
	r->nunique = 0;
	for (int i = 0; i < r->rri->ri_NumIndices; i++)
		if (r->rri->ri_IndexRelationInfo[i]->ii_Unique)
			r->nunique++;
	r->remoteslot = ExecInitExtraTupleSlot(estate, desc, &TTSOpsVirtual);
	r->localslot = table_slot_create(r->rel, &estate->es_tupleTable);
	r->bufferable = sdb_can_buffer(r);
	r->bufslots = NULL;
	r->nbuf = 0;
	r->bufbytes = 0;
	r->fetch = NULL;
	r->nblocks = InvalidBlockNumber;
	ItemPointerSetInvalid(&r->lasttid);
	r->misses = 0;
	r->recent = NULL;
	r->nkeys = 0;
	/* a TID is a page and a line there only in heap tables */
	for (int i = 0; r->rel->rd_tableam == GetHeapamTableAmRoutine() && i < r->rri->ri_NumIndices; i++)
	{
		Relation	idx = r->rri->ri_IndexRelationDescs[i];

		if (RelationGetRelid(idx) != r->idxoid)
			continue;
		r->nkeys = idx->rd_index->indnkeyatts;
		for (int k = 0; k < r->nkeys; k++)
		{
			r->keyattrs[k] = idx->rd_index->indkey.values[k];
			/* never on an expression (a replica identity has none) */
			if (r->keyattrs[k] <= 0)
				r->nkeys = 0;
		}
	}
#if PG_VERSION_NUM >= 160000
	EvalPlanQualInit(&r->epq, estate, NULL, NIL, -1, NIL);
#else
	EvalPlanQualInit(&r->epq, estate, NULL, NIL, -1);
#endif
	MemoryContextSwitchTo(oldcxt);
	r->estate = estate;
	r->open = true;

	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	sdb_open_rels = lappend(sdb_open_rels, r);
	MemoryContextSwitchTo(oldcxt);
}

static void
sdb_rel_exec_end(SdbRel *r)
{
	if (!r->open)
		return;
	if (r->fetch != NULL)
		table_index_fetch_end(r->fetch);
	r->fetch = NULL;
	EvalPlanQualEnd(&r->epq);
	ExecResetTupleTable(r->estate->es_tupleTable, false);
	ExecCloseResultRelations(r->estate);
	ExecCloseRangeTableRelations(r->estate);
	FreeExecutorState(r->estate);
	table_close(r->rel, NoLock);
	r->open = false;
	r->estate = NULL;
}

static void
sdb_release_all(void)
{
	ListCell   *lc;

	/* buffered rows go in before their executor state does */
	sdb_flush_inserts();
	foreach(lc, sdb_open_rels)
		sdb_rel_exec_end((SdbRel *) lfirst(lc));
	list_free(sdb_open_rels);
	sdb_open_rels = NIL;
}

/* After an abort the executor state is gone with the transaction: just forget it. */
static void
sdb_forget_all(void)
{
	ListCell   *lc;

	foreach(lc, sdb_open_rels)
	{
		SdbRel	   *r = (SdbRel *) lfirst(lc);

		r->open = false;
		r->estate = NULL;
		r->fetch = NULL;
		r->bufslots = NULL;
		r->nbuf = 0;
		r->bufbytes = 0;
	}
	list_free(sdb_open_rels);
	sdb_open_rels = NIL;
	sdb_pending = NULL;
}

static int
op_apply_release(void)
{
	SDB_TRY_BEGIN
		sdb_release_all();
	SDB_TRY_END
}

static int
op_rel_open(const char *schema, const char *table, void **handle, int *natts)
{
	SDB_TRY_BEGIN
		RangeVar   *rv = makeRangeVar(pstrdup(schema), pstrdup(table), -1);
		Relation	rel = table_openrv(rv, AccessShareLock);
		TupleDesc	desc = RelationGetDescr(rel);
		MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);
		SdbRel	   *r = palloc0(sizeof(SdbRel));
		int			i;

		if (rel->rd_rel->relkind != RELKIND_RELATION)
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("destination \"%s.%s\" is not a table", schema, table)));
		r->relid = RelationGetRelid(rel);
		r->natts = desc->natts;
		r->qualname = psprintf("%s.%s", quote_identifier(schema), quote_identifier(table));
		r->infuncs = palloc0(sizeof(FmgrInfo) * Max(r->natts, 1));
		r->typioparams = palloc0(sizeof(Oid) * Max(r->natts, 1));
		r->typmods = palloc0(sizeof(int32) * Max(r->natts, 1));
		for (i = 0; i < r->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);
			Oid			infunc;

			if (att->attisdropped)
				continue;
			getTypeInputInfo(att->atttypid, &infunc, &r->typioparams[i]);
			fmgr_info_cxt(infunc, &r->infuncs[i], TopMemoryContext);
			r->typmods[i] = att->atttypmod;
		}
		MemoryContextSwitchTo(oldcxt);
		table_close(rel, NoLock);
		*handle = r;
		*natts = r->natts;
	SDB_TRY_END
}

static void
op_rel_close(void *handle)
{
	SdbRel	   *r = (SdbRel *) handle;

	if (r == NULL || r->open)
		return;
	pfree(r->infuncs);
	pfree(r->typioparams);
	pfree(r->typmods);
	pfree(r->qualname);
	pfree(r);
}

/*
 * Fills slot from incoming values; columns the source did not send (unchanged
 * TOAST, absent) come from base when given. A search slot (for_search) only needs
 * the key columns, which are always sent: the others may stay NULL.
 */
static void
sdb_fill_slot(SdbRel *r, TupleTableSlot *slot, const SdbValue *vals, int n, TupleTableSlot *base,
			  bool for_search)
{
	TupleDesc	desc = slot->tts_tupleDescriptor;
	int			i;

	if (n != r->natts)
		elog(ERROR, "synchdb: %d values for %d attributes of %s", n, r->natts, r->qualname);
	ExecClearTuple(slot);
	if (base)
		slot_getallattrs(base);
	for (i = 0; i < r->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		const SdbValue *v = &vals[i];

		if (att->attisdropped)
		{
			slot->tts_values[i] = (Datum) 0;
			slot->tts_isnull[i] = true;
			continue;
		}
		switch (v->kind)
		{
			case SDB_VALUE_TEXT:
				{
					char	   *s = palloc(v->len + 1);

					memcpy(s, v->data, v->len);
					s[v->len] = '\0';
					slot->tts_values[i] = InputFunctionCall(&r->infuncs[i], s,
															r->typioparams[i], r->typmods[i]);
					slot->tts_isnull[i] = false;
					break;
				}
			case SDB_VALUE_UNCHANGED:
			case SDB_VALUE_ABSENT:
				if (base)
				{
					slot->tts_values[i] = base->tts_values[i];
					slot->tts_isnull[i] = base->tts_isnull[i];
				}
				else if (v->kind == SDB_VALUE_UNCHANGED && !for_search)
					ereport(ERROR,
							(errcode(ERRCODE_DATA_EXCEPTION),
							 errmsg("unchanged TOAST value for column \"%s\" of %s without a stored row",
									NameStr(att->attname), r->qualname)));
				else
				{
					slot->tts_values[i] = (Datum) 0;
					slot->tts_isnull[i] = true;
				}
				break;
			default:
				slot->tts_values[i] = (Datum) 0;
				slot->tts_isnull[i] = true;
				break;
		}
	}
	ExecStoreVirtualTuple(slot);
}

static void
sdb_change_begin(SdbRel *r)
{
	/* a change sees every row before it (the core flushes first; this is a net) */
	sdb_flush_inserts();
	sdb_rel_exec_begin(r);
	r->estate->es_output_cid = GetCurrentCommandId(true);
	AfterTriggerBeginQuery();
}

static void
sdb_change_end(SdbRel *r)
{
	AfterTriggerEndQuery(r->estate);
	ExecClearTuple(r->remoteslot);
	ExecClearTuple(r->localslot);
	ResetPerTupleExprContext(r->estate);
	/* later changes of the batch must see this one */
	CommandCounterIncrement();
}

/*
 * Whether the stored row in slot matches the searched one on the columns the
 * source sent. Dropped and generated columns, and values the source did not send
 * (absent, unchanged TOAST), are not compared: the search slot holds NULL there.
 * A type without a default equality operator (point, xml, ...) is compared by
 * binary image; both sides went through the same input function, so equal source
 * values have equal images.
 */
static bool
sdb_row_matches(TupleTableSlot *slot, TupleTableSlot *searchslot, const SdbValue *keyvals)
{
	TupleDesc	desc = slot->tts_tupleDescriptor;
	int			i;

	slot_getallattrs(slot);
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		TypeCacheEntry *typentry;
		Datum		a,
					b;

		if (att->attisdropped || att->attgenerated)
			continue;
		if (keyvals[i].kind == SDB_VALUE_ABSENT || keyvals[i].kind == SDB_VALUE_UNCHANGED)
			continue;
		if (slot->tts_isnull[i] != searchslot->tts_isnull[i])
			return false;
		if (slot->tts_isnull[i])
			continue;
		a = slot->tts_values[i];
		b = searchslot->tts_values[i];
		/* the type cache keeps the entry (and the operator's FmgrInfo) for the backend */
		typentry = lookup_type_cache(att->atttypid, TYPECACHE_EQ_OPR_FINFO);
		if (OidIsValid(typentry->eq_opr_finfo.fn_oid))
		{
			if (!DatumGetBool(FunctionCall2Coll(&typentry->eq_opr_finfo, att->attcollation, a, b)))
				return false;
		}
		else if (!datum_image_eq(a, b, att->attbyval, att->attlen))
			return false;
	}
	return true;
}

/*
 * Locks the row version in outslot for the change about to be applied, as the
 * built-in apply does: under the latest snapshot, waiting for a holder, not
 * following updates (the caller looks again on TM_Updated or TM_Deleted).
 */
static TM_Result
sdb_lock_row(SdbRel *r, TupleTableSlot *outslot, TM_FailureData *tmfd)
{
	TM_Result	res;

	PushActiveSnapshot(GetLatestSnapshot());
	res = table_tuple_lock(r->rel, &outslot->tts_tid, GetActiveSnapshot(), outslot,
						   GetCurrentCommandId(false), LockTupleExclusive, LockWaitBlock,
						   0 /* don't follow updates */ , tmfd);
	PopActiveSnapshot();
	return res;
}

/*
 * Without a replica identity index: a sequential scan for the first stored row
 * matching the searched one (so deleting one of several identical rows removes one
 * copy), locked and put into outslot. The scan, the waits and the locking follow
 * PostgreSQL's RelationFindReplTupleSeq; only the comparison is ours, because that
 * one compares every column with the type's equality operator, failing on types
 * without one and never matching when a column the source did not send (e.g. a
 * generated column of the destination) is compared against our NULL.
 */
static bool
sdb_find_row_seq(SdbRel *r, TupleTableSlot *searchslot, const SdbValue *keyvals,
				 TupleTableSlot *outslot)
{
	TupleTableSlot *scanslot;
	TableScanDesc scan;
	SnapshotData snap;
	TransactionId xwait;
	bool		found;
	/*
	 * A comparison may allocate (detoasting, the operator): freed after each row.
	 * Under the per-tuple context, so that an error leaves nothing behind past the
	 * next change (or the executor state).
	 */
	MemoryContext cmpcxt = AllocSetContextCreate(GetPerTupleMemoryContext(r->estate),
												 "synchdb row search", ALLOCSET_SMALL_SIZES);
	MemoryContext oldcxt;

	/* the dirty snapshot also shows rows of running transactions, so we can wait for them */
	InitDirtySnapshot(snap);
	scan = table_beginscan(r->rel, &snap, 0, NULL);
	scanslot = table_slot_create(r->rel, NULL);

retry:
	found = false;
	table_rescan(scan, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, scanslot))
	{
		bool		match;

		CHECK_FOR_INTERRUPTS();
		oldcxt = MemoryContextSwitchTo(cmpcxt);
		match = sdb_row_matches(scanslot, searchslot, keyvals);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(cmpcxt);
		if (!match)
			continue;

		found = true;
		ExecCopySlot(outslot, scanslot);
		xwait = TransactionIdIsValid(snap.xmin) ? snap.xmin : snap.xmax;
		/* a transaction still inserting or changing the row: wait for it, look again */
		if (TransactionIdIsValid(xwait))
		{
			XactLockTableWait(xwait, NULL, NULL, XLTW_None);
			goto retry;
		}
		break;
	}

	if (found)
	{
		TM_FailureData tmfd;
		TM_Result	res = sdb_lock_row(r, outslot, &tmfd);

		switch (res)
		{
			case TM_Ok:
				break;
			case TM_Updated:
				/* changed since we read it: the row may no longer match, search again */
				if (ItemPointerIndicatesMovedPartitions(&tmfd.ctid))
					ereport(LOG,
							(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
							 errmsg("tuple to be locked was already moved to another partition due to concurrent update, retrying")));
				else
					ereport(LOG,
							(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
							 errmsg("concurrent update, retrying")));
				goto retry;
			case TM_Deleted:
				/* gone since we read it: an identical row may remain, search again */
				ereport(LOG,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("concurrent delete, retrying")));
				goto retry;
			case TM_Invisible:
				elog(ERROR, "attempted to lock invisible tuple");
				break;
			default:
				elog(ERROR, "unexpected table_tuple_lock status: %u", res);
				break;
		}
	}

	table_endscan(scan);
	ExecDropSingleTupleTableSlot(scanslot);
	MemoryContextDelete(cmpcxt);
	return found;
}

/*
 * Whether the row stored at *tid (or the live member of its HOT chain; with
 * `exact`, that version itself, which may be a HOT chain's later member) is the
 * one searchslot identifies; then it is in outslot, locked. What
 * RelationFindReplTupleByIndex checks of what the index gives it, in the same
 * order: visible to a dirty snapshot, no running transaction inserting or
 * deleting it, equal on the index's columns (equal images here: stricter
 * than the index's, so never a wrong row), then locked under the latest
 * snapshot. The index is unique (the replica identity's, or the primary key):
 * one such row is the row. Anything short of that: false, and the caller
 * asks the index, which also does the waiting.
 */
static bool
sdb_row_at(SdbRel *r, ItemPointer tid, bool exact, TupleTableSlot *searchslot,
		   TupleTableSlot *outslot)
{
	SnapshotData snap;
	bool		call_again = false;
	TupleDesc	desc = RelationGetDescr(r->rel);
	TM_FailureData tmfd;

	/* the table grows under our own changes (new row versions go to its end) */
	if (ItemPointerGetBlockNumber(tid) >= r->nblocks)
		r->nblocks = RelationGetNumberOfBlocks(r->rel);
	if (ItemPointerGetBlockNumber(tid) >= r->nblocks)
		return false;
	InitDirtySnapshot(snap);
	if (exact ? !table_tuple_fetch_row_version(r->rel, tid, &snap, outslot)
		: !table_index_fetch_tuple(r->fetch, tid, &snap, outslot, &call_again, NULL))
		return false;
	if (TransactionIdIsValid(snap.xmin) || TransactionIdIsValid(snap.xmax))
		return false;
	for (int k = 0; k < r->nkeys; k++)
	{
		int			att = r->keyattrs[k] - 1;
		bool		isnull;
		Datum		d = slot_getattr(outslot, att + 1, &isnull);
		Form_pg_attribute a = TupleDescAttr(desc, att);

		/* images, not datums: a short value is stored with a 1-byte header */
		if (isnull || searchslot->tts_isnull[att] ||
			!datum_image_eq(d, searchslot->tts_values[att], a->attbyval, a->attlen))
			return false;
	}
	ExecMaterializeSlot(outslot);
	return sdb_lock_row(r, outslot, &tmfd) == TM_Ok;
}

/*
 * What sdb_row_at fetches with, and the table size it checks a TID against:
 * made for the first look of a transaction.
 */
static void
sdb_fetch_begin(SdbRel *r)
{
	MemoryContext oldcxt;

	if (r->fetch != NULL)
		return;
	oldcxt = MemoryContextSwitchTo(r->estate->es_query_cxt);
	r->fetch = table_index_fetch_begin(r->rel);
	MemoryContextSwitchTo(oldcxt);
	/* the table cannot shrink under our lock: a page below this is there */
	r->nblocks = RelationGetNumberOfBlocks(r->rel);
}

/*
 * The hash of the replica identity key in slot, by the values' images (the
 * comparison sdb_row_at makes); false when a key column is NULL or the table
 * has no such key. In the per-tuple memory context: a value may be detoasted.
 */
static bool
sdb_key_hash(SdbRel *r, TupleTableSlot *slot, uint32 *hash)
{
	TupleDesc	desc = RelationGetDescr(r->rel);
	uint32		h = 0;

	if (r->nkeys == 0)
		return false;
	slot_getallattrs(slot);
	for (int k = 0; k < r->nkeys; k++)
	{
		int			att = r->keyattrs[k] - 1;
		Form_pg_attribute a = TupleDescAttr(desc, att);

		if (slot->tts_isnull[att])
			return false;
		h = hash_combine(h, datum_image_hash(slot->tts_values[att], a->attbyval, a->attlen));
	}
	*hash = h;
	return true;
}

/* Notes where the row just written in slot (its new version) is. */
static void
sdb_remember_row(SdbRel *r, TupleTableSlot *slot)
{
	MemoryContext oldcxt;
	uint32		h;
	bool		hashed;

	if (r->nkeys == 0 || !ItemPointerIsValid(&slot->tts_tid))
		return;
	oldcxt = MemoryContextSwitchTo(GetPerTupleMemoryContext(r->estate));
	hashed = sdb_key_hash(r, slot, &h);
	MemoryContextSwitchTo(oldcxt);
	if (!hashed)
		return;
	if (r->recent == NULL)
		r->recent = MemoryContextAllocZero(r->estate->es_query_cxt,
										   sizeof(SdbRecentRow) * SDB_RECENT_ROWS);
	r->recent[h % SDB_RECENT_ROWS].hash = h;
	r->recent[h % SDB_RECENT_ROWS].tid = slot->tts_tid;
}

/*
 * A row changed again in the same batch (a counter, a balance, a status) is
 * looked for first where this transaction last wrote it. Through the index it
 * would be found only after every earlier version of it the transaction wrote,
 * each an index entry or a HOT chain member that no pruning can remove before
 * the commit: the walk grows with the batch. Only a hint: what is found there
 * is checked as an index hit is (sdb_row_at); otherwise the index is asked.
 */
static bool
sdb_recall_row(SdbRel *r, TupleTableSlot *searchslot, TupleTableSlot *outslot)
{
	SdbRecentRow *e;
	uint32		h;

	if (r->recent == NULL || !sdb_key_hash(r, searchslot, &h))
		return false;
	e = &r->recent[h % SDB_RECENT_ROWS];
	if (e->hash != h || !ItemPointerIsValid(&e->tid))
		return false;
	sdb_fetch_begin(r);
	return sdb_row_at(r, &e->tid, true, searchslot, outslot);
}

/*
 * A source statement that changes many rows visits them in its table's order,
 * which is ours too where the rows arrived in that order (the snapshot's COPY,
 * inserts): the row to change is then the one stored right after the row
 * changed before it, on the same page or at the start of the next. Looked for
 * there first, that costs a page already in shared buffers instead of a walk
 * down the index. Given up for the rest of the batch after SDB_GUESS_MISSES
 * misses in a row.
 */
static bool
sdb_guess_row(SdbRel *r, TupleTableSlot *searchslot, TupleTableSlot *outslot)
{
	ItemPointerData tid;
	BlockNumber blk;
	OffsetNumber off;

	if (r->nkeys == 0 || r->misses >= SDB_GUESS_MISSES || !ItemPointerIsValid(&r->lasttid))
		return false;
	sdb_fetch_begin(r);
	slot_getallattrs(searchslot);
	blk = ItemPointerGetBlockNumber(&r->lasttid);
	off = ItemPointerGetOffsetNumber(&r->lasttid);
	ItemPointerSet(&tid, blk, OffsetNumberNext(off));
	if (sdb_row_at(r, &tid, false, searchslot, outslot))
		return true;
	ItemPointerSet(&tid, blk + 1, FirstOffsetNumber);
	if (blk + 1 != InvalidBlockNumber && sdb_row_at(r, &tid, false, searchslot, outslot))
		return true;
	r->misses++;
	return false;
}

/*
 * Puts the stored row that `keyvals` identifies into localslot (locked), through
 * the replica identity index (a guess first, sdb_guess_row) or, without one, a
 * scan comparing the sent columns (sdb_find_row_seq). False when there is none
 * (update_missing, delete_missing: the core decides, see synchdb.on_missing_row).
 */
static bool
sdb_locate_row(SdbRel *r, const SdbValue *keyvals, int n)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(GetPerTupleMemoryContext(r->estate));
	bool		recalled;
	bool		guessed;

	sdb_fill_slot(r, r->remoteslot, keyvals, n, NULL, true);
	MemoryContextSwitchTo(oldcxt);
	if (!OidIsValid(r->idxoid))
		return sdb_find_row_seq(r, r->remoteslot, keyvals, r->localslot);
	oldcxt = MemoryContextSwitchTo(GetPerTupleMemoryContext(r->estate));
	recalled = sdb_recall_row(r, r->remoteslot, r->localslot);
	guessed = !recalled && sdb_guess_row(r, r->remoteslot, r->localslot);
	MemoryContextSwitchTo(oldcxt);
	if (guessed)
		r->misses = 0;
	else if (!recalled && !RelationFindReplTupleByIndex(r->rel, r->idxoid, LockTupleExclusive,
														r->remoteslot, r->localslot))
		return false;
	r->lasttid = r->localslot->tts_tid;
	return true;
}

/*
 * PostgreSQL 18's multiple_unique_conflicts: the row in remoteslot conflicts
 * with existing rows on more than one unique index. Probed only on tables with
 * two or more (one index lookup each); a single conflict is left to the insert
 * or update, which fails with PostgreSQL's own unique violation (insert_exists,
 * update_exists). `self` is the row being updated, which is no conflict.
 */
static void
sdb_check_unique_conflicts(SdbRel *r, ItemPointer self)
{
	ResultRelInfo *rri = r->rri;
	StringInfoData names;
	int			nconfl = 0;

	if (r->nunique < 2)
		return;
	initStringInfo(&names);
	for (int i = 0; i < rri->ri_NumIndices; i++)
	{
		Relation	idx = rri->ri_IndexRelationDescs[i];
		ItemPointerData conflict;
		List	   *arbiter;

		if (!rri->ri_IndexRelationInfo[i]->ii_Unique)
			continue;
		arbiter = list_make1_oid(RelationGetRelid(idx));
#if PG_VERSION_NUM >= 180000
		if (ExecCheckIndexConstraints(rri, r->remoteslot, r->estate, &conflict, self, arbiter))
			continue;
#else
		if (ExecCheckIndexConstraints(rri, r->remoteslot, r->estate, &conflict, arbiter))
			continue;
		if (self != NULL && ItemPointerEquals(self, &conflict))
			continue;
#endif
		nconfl++;
		appendStringInfo(&names, "%s%s", nconfl > 1 ? ", " : "",
						 quote_identifier(RelationGetRelationName(idx)));
	}
	if (nconfl >= 2)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("row conflicts with existing rows on %d unique indexes of %s: %s",
						nconfl, r->qualname, names.data)));
}

static int
op_apply_insert(void *handle, const SdbValue *vals, int n)
{
	SDB_TRY_BEGIN
		SdbRel	   *r = (SdbRel *) handle;
		MemoryContext oldcxt;

		sdb_change_begin(r);
		oldcxt = MemoryContextSwitchTo(GetPerTupleMemoryContext(r->estate));
		sdb_fill_slot(r, r->remoteslot, vals, n, NULL, false);
		MemoryContextSwitchTo(oldcxt);
		sdb_check_unique_conflicts(r, NULL);
		ExecSimpleRelationInsert(r->rri, r->estate, r->remoteslot);
		sdb_remember_row(r, r->remoteslot);
		sdb_change_end(r);
	SDB_TRY_END
}

/*
 * Whether inserts into r may be gathered and written by table_multi_insert:
 * only when no row trigger would fire for them (in this session's replication
 * role) and no unique or exclusion check is deferred, because those need each
 * row's own AFTER event; and not when PostgreSQL 18's multiple_unique_conflicts
 * probe runs, which looks at the stored rows before each insert.
 */
static bool
sdb_can_buffer(SdbRel *r)
{
	TriggerDesc *td = r->rri->ri_TrigDesc;

	if (r->nunique >= 2)
		return false;
	for (int i = 0; td != NULL && i < td->numtriggers; i++)
	{
		Trigger    *t = &td->triggers[i];
		bool		fires;

		if (!TRIGGER_FOR_ROW(t->tgtype) || !TRIGGER_FOR_INSERT(t->tgtype))
			continue;
		if (SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA)
			fires = t->tgenabled != TRIGGER_FIRES_ON_ORIGIN && t->tgenabled != TRIGGER_DISABLED;
		else
			fires = t->tgenabled != TRIGGER_FIRES_ON_REPLICA && t->tgenabled != TRIGGER_DISABLED;
		if (fires)
			return false;
	}
	for (int i = 0; i < r->rri->ri_NumIndices; i++)
		if (!r->rri->ri_IndexRelationDescs[i]->rd_index->indimmediate)
			return false;
	return true;
}

/*
 * Writes the buffered rows: the heap tuples in one table_multi_insert, then
 * each row's index entries in order, so that a unique violation is found on
 * the same row as inserting one at a time would find it (sdb_flush_row tells
 * which). Nothing stays buffered afterwards, whether it worked or not: on an
 * error the transaction is rolled back.
 */
static void
sdb_flush_inserts(void)
{
	SdbRel	   *r = sdb_pending;
	EState	   *estate;
	MemoryContext oldcxt;
	CommandId	cid;
	int			n;

	sdb_flush_row = -1;
	if (r == NULL)
		return;
	sdb_pending = NULL;
	n = r->nbuf;
	r->nbuf = 0;
	r->bufbytes = 0;
	if (n == 0 || !r->open)
		return;
	estate = r->estate;
	cid = GetCurrentCommandId(true);
	estate->es_output_cid = cid;
	oldcxt = MemoryContextSwitchTo(GetPerTupleMemoryContext(estate));
	table_multi_insert(r->rel, r->bufslots, n, cid, 0, NULL);
	MemoryContextSwitchTo(oldcxt);
	ResetPerTupleExprContext(estate);
	for (int i = 0; i < n; i++)
	{
		if (r->rri->ri_NumIndices > 0)
		{
			List	   *recheck;

			sdb_flush_row = i;
			oldcxt = MemoryContextSwitchTo(GetPerTupleMemoryContext(estate));
#if PG_VERSION_NUM >= 160000
			recheck = ExecInsertIndexTuples(r->rri, r->bufslots[i], estate, false, false,
											NULL, NIL, false);
#else
			recheck = ExecInsertIndexTuples(r->rri, r->bufslots[i], estate, false, false,
											NULL, NIL);
#endif
			MemoryContextSwitchTo(oldcxt);
			/* immediate indexes only (sdb_can_buffer): nothing to recheck */
			list_free(recheck);
			ResetPerTupleExprContext(estate);
		}
		ExecClearTuple(r->bufslots[i]);
	}
	sdb_flush_row = -1;
	/* later changes of the batch must see these rows */
	CommandCounterIncrement();
}

/*
 * An insert kept for sdb_flush_inserts. Returns how many rows are buffered now,
 * or 0 when r cannot buffer (nothing done: use op_apply_insert). *full says the
 * caller should flush now. Generated columns and constraints are computed and
 * checked here, so that their errors name this row.
 */
static int
op_apply_insert_buffered(void *handle, const SdbValue *vals, int n, bool *full)
{
	SDB_TRY_BEGIN
		SdbRel	   *r = (SdbRel *) handle;
		Relation	rel;
		EState	   *estate;
		MemoryContext oldcxt;
		TupleTableSlot *slot;

		*full = false;
		if (sdb_pending != NULL && sdb_pending != r)
			sdb_flush_inserts();
		sdb_rel_exec_begin(r);
		if (r->bufferable)
		{
			rel = r->rel;
			estate = r->estate;
			oldcxt = MemoryContextSwitchTo(GetPerTupleMemoryContext(estate));
			sdb_fill_slot(r, r->remoteslot, vals, n, NULL, false);
			if (rel->rd_att->constr && rel->rd_att->constr->has_generated_stored)
				ExecComputeStoredGenerated(r->rri, estate, r->remoteslot, CMD_INSERT);
			if (rel->rd_att->constr)
				ExecConstraints(r->rri, r->remoteslot, estate);
			if (rel->rd_rel->relispartition)
				ExecPartitionCheck(r->rri, r->remoteslot, estate, true);
			MemoryContextSwitchTo(oldcxt);

			oldcxt = MemoryContextSwitchTo(estate->es_query_cxt);
			if (r->bufslots == NULL)
				r->bufslots = palloc0(sizeof(TupleTableSlot *) * SDB_BUF_ROWS);
			if (r->bufslots[r->nbuf] == NULL)
				r->bufslots[r->nbuf] = table_slot_create(rel, &estate->es_tupleTable);
			slot = r->bufslots[r->nbuf];
			MemoryContextSwitchTo(oldcxt);
			ExecCopySlot(slot, r->remoteslot);
			ExecClearTuple(r->remoteslot);
			ResetPerTupleExprContext(estate);

			r->nbuf++;
			for (int i = 0; i < n; i++)
				r->bufbytes += vals[i].len;
			sdb_pending = r;
			*full = r->nbuf >= SDB_BUF_ROWS || r->bufbytes >= SDB_BUF_BYTES;
			sdb_rc = r->nbuf;
		}
	SDB_TRY_END
}

static int
sdb_try_flush(void)
{
	SDB_TRY_BEGIN
		sdb_flush_inserts();
	SDB_TRY_END
}

/* Writes the buffered inserts; on an error *row is the one that failed, or -1. */
static int
op_apply_flush(int *row)
{
	int			rc = sdb_try_flush();

	*row = rc < 0 ? sdb_flush_row : -1;
	return rc;
}

static int
op_apply_update(void *handle, const SdbValue *oldvals, const SdbValue *newvals, int n)
{
	SDB_TRY_BEGIN
		SdbRel	   *r = (SdbRel *) handle;
		MemoryContext oldcxt;

		sdb_change_begin(r);
		if (!sdb_locate_row(r, oldvals ? oldvals : newvals, n))
			sdb_rc = SDB_ROW_MISSING;
		else
		{
			oldcxt = MemoryContextSwitchTo(GetPerTupleMemoryContext(r->estate));
			sdb_fill_slot(r, r->remoteslot, newvals, n, r->localslot, false);
			MemoryContextSwitchTo(oldcxt);
			sdb_check_unique_conflicts(r, &r->localslot->tts_tid);
			EvalPlanQualSetSlot(&r->epq, r->remoteslot);
			ExecSimpleRelationUpdate(r->rri, r->estate, &r->epq, r->localslot, r->remoteslot);
			sdb_remember_row(r, r->remoteslot);
		}
		sdb_change_end(r);
	SDB_TRY_END
}

static int
op_apply_delete(void *handle, const SdbValue *oldvals, int n)
{
	SDB_TRY_BEGIN
		SdbRel	   *r = (SdbRel *) handle;

		sdb_change_begin(r);
		if (!sdb_locate_row(r, oldvals, n))
			sdb_rc = SDB_ROW_MISSING;
		else
		{
			EvalPlanQualSetSlot(&r->epq, r->localslot);
			ExecSimpleRelationDelete(r->rri, r->estate, &r->epq, r->localslot);
		}
		sdb_change_end(r);
	SDB_TRY_END
}

/* ------------------------------------------------------------ transactions, SPI */

/*
 * The source position the open transaction commits (origin_set_commit). It is
 * handed to PostgreSQL only around the commit: from PostgreSQL 16 on, an abort in
 * a session with a replication origin also advances the origin to
 * replorigin_session_origin_lsn, so a batch rolled back (a stop request, an error)
 * would otherwise be skipped for good at the next start.
 */
static XLogRecPtr sdb_commit_lsn = InvalidXLogRecPtr;
static TimestampTz sdb_commit_ts = 0;

static void
sdb_origin_lsn_clear(void)
{
	replorigin_session_origin_lsn = InvalidXLogRecPtr;
	replorigin_session_origin_timestamp = 0;
}

static int
op_xact_begin(void)
{
	SDB_TRY_BEGIN
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
	SDB_TRY_END
}

static int
op_xact_commit(void)
{
	SDB_TRY_BEGIN
		sdb_release_all();
		if (ActiveSnapshotSet())
			PopActiveSnapshot();
		replorigin_session_origin_lsn = sdb_commit_lsn;
		replorigin_session_origin_timestamp = sdb_commit_ts;
		CommitTransactionCommand();
		sdb_origin_lsn_clear();
		sdb_commit_lsn = InvalidXLogRecPtr;
		sdb_commit_ts = 0;
		pgstat_report_stat(false);
	SDB_TRY_END
}

static void
op_xact_abort(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	/* a rolled-back batch must not move the origin (see sdb_commit_lsn) */
	sdb_origin_lsn_clear();
	sdb_commit_lsn = InvalidXLogRecPtr;
	sdb_commit_ts = 0;
	sdb_forget_all();
	PG_TRY();
	{
		AbortCurrentTransaction();
	}
	PG_CATCH();
	{
		sdb_save_error(cxt);
	}
	PG_END_TRY();
	/* the transaction's memory is gone; work on in a context that lives on */
	MemoryContextSwitchTo(TopMemoryContext);
}

/*
 * Subtransactions for error strategy 'skip', as PL/pgSQL's exception blocks do
 * them: the caller's memory context and resource owner are restored afterwards.
 * Executor state made inside one is released with it (commit) or forgotten
 * (abort: its resource owner already dropped the pins and references).
 */
static MemoryContext sdb_subxact_cxt;
static ResourceOwner sdb_subxact_owner;

static int
op_subxact_begin(void)
{
	SDB_TRY_BEGIN
		sdb_release_all();
		sdb_subxact_cxt = CurrentMemoryContext;
		sdb_subxact_owner = CurrentResourceOwner;
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(sdb_subxact_cxt);
	SDB_TRY_END
}

static int
op_subxact_commit(void)
{
	SDB_TRY_BEGIN
		sdb_release_all();
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(sdb_subxact_cxt);
		CurrentResourceOwner = sdb_subxact_owner;
	SDB_TRY_END
}

static void
op_subxact_abort(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	sdb_origin_lsn_clear();
	sdb_forget_all();
	PG_TRY();
	{
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		sdb_save_error(cxt);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(sdb_subxact_cxt);
	CurrentResourceOwner = sdb_subxact_owner;
}

/*
 * Helpers of the SPI operations below; they run inside their SDB_TRY block,
 * connected to SPI, so that everything they palloc goes with SPI_finish.
 */

/*
 * SPI_connect for one operation, inside its SDB_TRY block: in a transaction
 * only (SPI outside one crashes the backend), and after the kept inserts are
 * written, so that the statement sees every row before it.
 */
static void
sdb_spi_connect(void)
{
	if (!IsTransactionState())
		elog(ERROR, "synchdb: SQL run outside a transaction");
	sdb_flush_inserts();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "synchdb: SPI_connect failed");
}

/* Text parameters ($1..$n, NULL pointer = SQL NULL) as datums; types may be NULL. */
static void
sdb_text_params(int nparams, const char *const *params, Oid **types, Datum **values, char **nulls)
{
	int			i;

	if (types)
		*types = NULL;
	*values = NULL;
	*nulls = NULL;
	if (nparams <= 0)
		return;
	if (types)
		*types = palloc(sizeof(Oid) * nparams);
	*values = palloc(sizeof(Datum) * nparams);
	*nulls = palloc(nparams);
	for (i = 0; i < nparams; i++)
	{
		if (types)
			(*types)[i] = TEXTOID;
		(*values)[i] = params[i] ? CStringGetTextDatum(params[i]) : (Datum) 0;
		(*nulls)[i] = params[i] ? ' ' : 'n';
	}
}

/* After SPI_execute*: the count, and every row as text through row_cb. */
static void
sdb_spi_result(int ret, const char *what, SdbRowCb row_cb, void *ctx, uint64_t *processed)
{
	if (ret < 0)
		elog(ERROR, "synchdb: %s failed: %s", what, SPI_result_code_string(ret));
	if (processed)
		*processed = SPI_processed;
	if (row_cb && SPI_tuptable)
	{
		TupleDesc	desc = SPI_tuptable->tupdesc;
		int			nf = desc->natts;
		const char **vals = palloc(sizeof(char *) * Max(nf, 1));
		uint64		r;
		int			i;

		for (r = 0; r < SPI_processed; r++)
		{
			for (i = 0; i < nf; i++)
				vals[i] = SPI_getvalue(SPI_tuptable->vals[r], desc, i + 1);
			row_cb(ctx, nf, vals);
		}
	}
}

static int
op_spi_exec(const char *sql, int nparams, const char *const *params, SdbRowCb row_cb,
			void *ctx, uint64_t *processed)
{
	SDB_TRY_BEGIN
		Oid		   *types;
		Datum	   *values;
		char	   *nulls;

		sdb_spi_connect();
		sdb_text_params(nparams, params, &types, &values, &nulls);
		sdb_spi_result(SPI_execute_with_args(sql, nparams, types, values, nulls, false, 0),
					   "SPI_execute", row_cb, ctx, processed);
		SPI_finish();
	SDB_TRY_END
}

/*
 * Prepared statements for SQL that runs once per change (transform rules): parsed
 * and planned once, kept past the transaction with SPI_keepplan; the plan cache
 * replans them when a table or function they use changes.
 */
static int
op_spi_prepare(const char *sql, int nparams, void **plan)
{
	SDB_TRY_BEGIN
		Oid		   *types = NULL;
		SPIPlanPtr	p;
		int			i;

		*plan = NULL;
		sdb_spi_connect();
		if (nparams > 0)
		{
			types = palloc(sizeof(Oid) * nparams);
			for (i = 0; i < nparams; i++)
				types[i] = TEXTOID;
		}
		p = SPI_prepare(sql, nparams, types);
		if (p == NULL)
			elog(ERROR, "synchdb: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(p) != 0)
			elog(ERROR, "synchdb: SPI_keepplan failed");
		*plan = p;
		SPI_finish();
	SDB_TRY_END
}

static int
op_spi_exec_plan(void *plan, int nparams, const char *const *params, SdbRowCb row_cb,
				 void *ctx, uint64_t *processed)
{
	SDB_TRY_BEGIN
		Datum	   *values;
		char	   *nulls;

		sdb_spi_connect();
		if (nparams != SPI_getargcount((SPIPlanPtr) plan))
			elog(ERROR, "synchdb: prepared statement takes %d parameters, got %d",
				 SPI_getargcount((SPIPlanPtr) plan), nparams);
		sdb_text_params(nparams, params, NULL, &values, &nulls);
		sdb_spi_result(SPI_execute_plan((SPIPlanPtr) plan, values, nulls, false, 0),
					   "SPI_execute_plan", row_cb, ctx, processed);
		SPI_finish();
	SDB_TRY_END
}

static void
op_spi_free_plan(void *plan)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (plan == NULL)
		return;
	PG_TRY();
	{
		SPI_freeplan((SPIPlanPtr) plan);
	}
	PG_CATCH();
	{
		/* nothing to undo: the plan's memory is lost at worst */
		sdb_save_error(cxt);
	}
	PG_END_TRY();
}

/* ------------------------------------------------------------ COPY FROM */

static SdbCopyReadCb sdb_copy_cb;
static void *sdb_copy_ctx;

static int
sdb_copy_source(void *outbuf, int minread, int maxread)
{
	int			n = sdb_copy_cb(sdb_copy_ctx, outbuf, minread, maxread);

	if (n < 0)
	{
		if (sdb_got_sigterm)
			ereport(ERROR,
					(errcode(ERRCODE_ADMIN_SHUTDOWN),
					 errmsg("snapshot copy interrupted: connector is stopping")));
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("%s", synchdb_copy_error())));
	}
	return n;
}

static int
op_copy_from(const char *schema, const char *table, int ncols, const char *const *cols,
			 int flags, SdbCopyReadCb read_cb, void *ctx, uint64_t *rows)
{
	SDB_TRY_BEGIN
		RangeVar   *rv = makeRangeVar(pstrdup(schema), pstrdup(table), -1);
		Relation	rel = table_openrv(rv, RowExclusiveLock);
		ParseState *pstate = make_parsestate(NULL);
		List	   *attnames = NIL;
		List	   *options = NIL;
		CopyFromState cstate;
		int			i;

		sdb_flush_inserts();
		for (i = 0; i < ncols; i++)
			attnames = lappend(attnames, makeString(pstrdup(cols[i])));
		if (flags & SDB_COPY_FREEZE)
			options = lappend(options, makeDefElem("freeze", (Node *) makeBoolean(true), -1));
		if (flags & SDB_COPY_BINARY)
			options = lappend(options, makeDefElem("format", (Node *) makeString("binary"), -1));
		addRangeTableEntryForRelation(pstate, rel, RowExclusiveLock, NULL, false, false);
		sdb_copy_cb = read_cb;
		sdb_copy_ctx = ctx;
		cstate = BeginCopyFrom(pstate, rel, NULL, NULL, false, sdb_copy_source, attnames, options);
		*rows = CopyFrom(cstate);
		EndCopyFrom(cstate);
		free_parsestate(pstate);
		table_close(rel, NoLock);
	SDB_TRY_END
}

/* ------------------------------------------------------------ replication origin */

static int
op_origin_setup(const char *name)
{
	SDB_TRY_BEGIN
		RepOriginId id = replorigin_by_name(name, true);

		if (id == InvalidRepOriginId)
			id = replorigin_create(name);
#if PG_VERSION_NUM >= 160000
		replorigin_session_setup(id, 0);
#else
		replorigin_session_setup(id);
#endif
		replorigin_session_origin = id;
	SDB_TRY_END
}

static int
op_origin_release(void)
{
	SDB_TRY_BEGIN
		if (replorigin_session_origin != InvalidRepOriginId)
			replorigin_session_reset();
		replorigin_session_origin = InvalidRepOriginId;
	SDB_TRY_END
}

static uint64_t
op_origin_progress(bool flush)
{
	MemoryContext cxt = CurrentMemoryContext;
	uint64_t	lsn = 0;

	PG_TRY();
	{
		lsn = replorigin_session_get_progress(flush);
	}
	PG_CATCH();
	{
		sdb_save_error(cxt);
	}
	PG_END_TRY();
	return lsn;
}

static void
op_origin_set_commit(uint64_t lsn, int64_t ts)
{
	/* applied by op_xact_commit */
	sdb_commit_lsn = lsn;
	sdb_commit_ts = ts;
}

/* ------------------------------------------------------------ waiting, config */

/*
 * One wait set for the worker's life: building one per wait (what WaitLatchOrSocket
 * does) costs an epoll instance per wake-up. It is rebuilt only when the watched
 * descriptor changes; the core keeps its eventfd for the whole run.
 */
static WaitEventSet *sdb_wait_set = NULL;
static int	sdb_wait_fd = -2;

static WaitEventSet *
sdb_get_wait_set(int fd)
{
	if (sdb_wait_set != NULL && sdb_wait_fd == fd)
		return sdb_wait_set;
	if (sdb_wait_set != NULL)
		FreeWaitEventSet(sdb_wait_set);
	sdb_wait_set = NULL;
#if PG_VERSION_NUM >= 170000
	sdb_wait_set = CreateWaitEventSet(NULL, 3);
#else
	sdb_wait_set = CreateWaitEventSet(TopMemoryContext, 3);
#endif
	AddWaitEventToSet(sdb_wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(sdb_wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	if (fd >= 0)
		AddWaitEventToSet(sdb_wait_set, WL_SOCKET_READABLE, fd, NULL, NULL);
	sdb_wait_fd = fd;
	return sdb_wait_set;
}

static int
op_wait(int fd, int64_t timeout_ms)
{
	SDB_TRY_BEGIN
		WaitEvent	events[3];
		int			n;
		int			i;

		n = WaitEventSetWait(sdb_get_wait_set(fd), timeout_ms >= 0 ? (long) timeout_ms : -1L,
							 events, lengthof(events), PG_WAIT_EXTENSION);
		for (i = 0; i < n; i++)
		{
			if (events[i].events & WL_LATCH_SET)
				sdb_rc |= SDB_WAIT_LATCH;
			if (events[i].events & WL_SOCKET_READABLE)
				sdb_rc |= SDB_WAIT_SOCKET;
		}
		if (n == 0)
			sdb_rc |= SDB_WAIT_TIMEOUT;
		ResetLatch(MyLatch);
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (!sdb_got_sigterm)
			CHECK_FOR_INTERRUPTS();
	SDB_TRY_END
}

static bool
op_should_exit(void)
{
	return sdb_got_sigterm;
}

/* The cancel SIGTERM set was for the work running then, not for the stop's own. */
static void
op_accept_stop(void)
{
	if (sdb_got_sigterm)
		QueryCancelPending = false;
}

/* ---------------------------------------------------------- copy helpers */

/*
 * The copy helpers a connector started for its snapshot, by number (the
 * handles live in this process's memory: only the connector that started
 * them asks about them).
 */
#define SDB_MAX_HELPERS 64
static BackgroundWorkerHandle *sdb_helpers[SDB_MAX_HELPERS];
static bool sdb_helpers_exit_hook = false;

/* Asks copy helper `no` to stop (SIGTERM through the postmaster), and forgets it. */
static void
sdb_stop_helper(int no)
{
	if (sdb_helpers[no] != NULL)
	{
		TerminateBackgroundWorker(sdb_helpers[no]);
		pfree(sdb_helpers[no]);
		sdb_helpers[no] = NULL;
	}
}

/* Asks every copy helper this process started to stop (guarded: called from Rust). */
static void
op_stop_helpers(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		for (int i = 0; i < SDB_MAX_HELPERS; i++)
			sdb_stop_helper(i);
	}
	PG_CATCH();
	{
		sdb_save_error(cxt);
	}
	PG_END_TRY();
}

/* A connector that exits takes its copy helpers with it. */
static void
sdb_helpers_on_exit(int code, Datum arg)
{
	for (int i = 0; i < SDB_MAX_HELPERS; i++)
		sdb_stop_helper(i);
}

/*
 * Starts copy helper `no` of connector `name` (state slot `parent_slot`) in
 * this database, as this worker's role, and waits until it runs. Its pid; 0
 * when no background worker slot is free; -1 on an error (in last_error).
 */
static int
op_start_helper(const char *name, int parent_slot, int no)
{
	BackgroundWorker bgw;
	SdbHelperExtra extra;
	pid_t		pid = 0;
	volatile int started = 0;

	if (no < 0 || no >= SDB_MAX_HELPERS || strlen(name) >= sizeof(extra.name))
	{
		snprintf(sdb_errmsg, sizeof(sdb_errmsg), "copy helper %d of connector \"%s\" cannot be numbered", no, name);
		return -1;
	}
	memset(&extra, 0, sizeof(extra));
	extra.dboid = MyDatabaseId;
	extra.userid = GetUserId();
	extra.parent_slot = parent_slot;
	strlcpy(extra.name, name, sizeof(extra.name));
	sdb_init_bgw(&bgw, "synchdb_helper_main", "synchdb copy helper");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "synchdb copy helper %d of %s", no, name);
	bgw.bgw_main_arg = Int32GetDatum(no);
	bgw.bgw_notify_pid = MyProcPid;
	memcpy(bgw.bgw_extra, &extra, sizeof(extra));
	if (!sdb_helpers_exit_hook)
	{
		before_shmem_exit(sdb_helpers_on_exit, (Datum) 0);
		sdb_helpers_exit_hook = true;
	}
	sdb_stop_helper(no);
	{
		SDB_TRY_BEGIN
		/* the handle outlives the transaction it may be started in */
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		bool		registered = RegisterDynamicBackgroundWorker(&bgw, &sdb_helpers[no]);

		MemoryContextSwitchTo(old);
		if (registered && WaitForBackgroundWorkerStartup(sdb_helpers[no], &pid) == BGWH_STARTED)
			started = (int) pid;
		sdb_rc = started;
		SDB_TRY_END
	}
}

/* Whether copy helper `no` started by this process still runs (guarded: called from Rust). */
static bool
op_helper_running(int no)
{
	MemoryContext cxt = CurrentMemoryContext;
	pid_t		pid;
	volatile bool running = false;

	if (no < 0 || no >= SDB_MAX_HELPERS || sdb_helpers[no] == NULL)
		return false;
	PG_TRY();
	{
		running = GetBackgroundWorkerPid(sdb_helpers[no], &pid) == BGWH_STARTED;
	}
	PG_CATCH();
	{
		sdb_save_error(cxt);
	}
	PG_END_TRY();
	return running;
}

static const char *
op_guc(const char *name)
{
	MemoryContext cxt = CurrentMemoryContext;
	const char *v = NULL;

	PG_TRY();
	{
		v = GetConfigOption(name, true, false);
	}
	PG_CATCH();
	{
		sdb_save_error(cxt);
		v = NULL;
	}
	PG_END_TRY();
	return v;
}

/*
 * Error handling while applying (read by the core through GetConfigOption). SUSET,
 * so that ALTER DATABASE/ROLE ... SET can choose it per connector's database.
 */
static int	sdb_error_strategy = SDB_STRATEGY_EXIT;
static bool sdb_log_change_on_error = true;
static int	sdb_retry_interval = 5000;

static int	sdb_on_missing_row = SDB_MISSING_ROW_SKIP;

/* values shared with the core (synchdb_core.h), which reads them in apply_settings */
static const struct config_enum_entry sdb_missing_row_options[] = {
	{"skip", SDB_MISSING_ROW_SKIP, false},
	{"error", SDB_MISSING_ROW_ERROR, false},
	{NULL, 0, false}
};

static const struct config_enum_entry sdb_strategy_options[] = {
	{"exit", SDB_STRATEGY_EXIT, false},
	{"retry", SDB_STRATEGY_RETRY, false},
	{"skip", SDB_STRATEGY_SKIP, false},
	{NULL, 0, false}
};

void
sdb_define_apply_gucs(void)
{
	DefineCustomEnumVariable("synchdb.error_handling_strategy",
							 "What a connector does when a change cannot be applied: exit, retry or skip.",
							 "exit stops the connector (the failing batch is retried at the next start); "
							 "retry restarts it after synchdb.error_retry_interval; "
							 "skip logs the failing change and applies the rest of its batch.",
							 &sdb_error_strategy, SDB_STRATEGY_EXIT, sdb_strategy_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("synchdb.on_missing_row",
							 "What a connector does with an UPDATE or DELETE whose row the destination does not have: skip or error.",
							 "skip logs the conflict (update_missing, delete_missing), counts it and goes on, "
							 "as PostgreSQL's subscriber does; error treats it as a failed change "
							 "(synchdb.error_handling_strategy decides).",
							 &sdb_on_missing_row, SDB_MISSING_ROW_SKIP, sdb_missing_row_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("synchdb.log_change_on_error",
							 "Log the change that could not be applied (its table, kind and values).",
							 NULL, &sdb_log_change_on_error, true,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("synchdb.error_retry_interval",
							"Wait before a connector retries after an error (strategy retry).",
							NULL, &sdb_retry_interval, 5000, 10, 3600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
}

/*
 * The settings the core reads for every applied transaction: copies of the
 * variables, which hold the values in effect (after a reload or a SET too),
 * without GetConfigOption's lookup by name. Reads C variables only: nothing
 * here can raise an error.
 */
static void
op_apply_settings(SdbApplySettings *out)
{
	out->error_strategy = sdb_error_strategy;
	out->on_missing_row = sdb_on_missing_row;
	out->log_change_on_error = sdb_log_change_on_error;
	out->sequence_sync_interval_ms = sdb_sequence_sync_interval_ms();
}

void
sdb_init_ops(SdbPgOps *ops)
{
	memset(ops, 0, sizeof(*ops));
	ops->last_error = op_last_error;
	ops->last_sqlstate = op_last_sqlstate;
	ops->log = op_log;
	ops->xact_begin = op_xact_begin;
	ops->xact_commit = op_xact_commit;
	ops->xact_abort = op_xact_abort;
	ops->spi_exec = op_spi_exec;
	ops->spi_prepare = op_spi_prepare;
	ops->spi_exec_plan = op_spi_exec_plan;
	ops->spi_free_plan = op_spi_free_plan;
	ops->copy_from = op_copy_from;
	ops->rel_open = op_rel_open;
	ops->rel_close = op_rel_close;
	ops->apply_insert = op_apply_insert;
	ops->apply_insert_buffered = op_apply_insert_buffered;
	ops->apply_flush = op_apply_flush;
	ops->apply_update = op_apply_update;
	ops->apply_delete = op_apply_delete;
	ops->apply_release = op_apply_release;
	ops->origin_setup = op_origin_setup;
	ops->subxact_begin = op_subxact_begin;
	ops->subxact_commit = op_subxact_commit;
	ops->subxact_abort = op_subxact_abort;
	ops->origin_release = op_origin_release;
	ops->origin_progress = op_origin_progress;
	ops->origin_set_commit = op_origin_set_commit;
	ops->wait = op_wait;
	ops->should_exit = op_should_exit;
	ops->accept_stop = op_accept_stop;
	ops->guc = op_guc;
	ops->apply_settings = op_apply_settings;
	ops->start_helper = op_start_helper;
	ops->helper_running = op_helper_running;
	ops->stop_helpers = op_stop_helpers;
	ops->data_dir = DataDir;
	ops->system_identifier = GetSystemIdentifier();
	ops->database_oid = MyDatabaseId;
}
