/*
 * kiss lease protocol (lockproto/PROTOCOL.md), checked by spin from
 * lockproto/model_test.go.
 *
 * Cache: D (object 0) is already present but unrooted -- garbage a pruner may
 * delete -- and each writer i uploads root R(i+1), which references D.
 * `nix copy` skips D if it sees it (the query), so a prune between that query
 * and the writer's marker would leave a rooted closure incomplete.
 *
 * Safety (S1): for every writer i, marker[i] => info[R(i+1)] && info[D],
 * asserted in every reachable state by the Safety process.
 *
 * Time is a discrete store clock that a Clock process advances at any moment
 * (up to MAXT): that models pauses of any process (SIGSTOP, GC, slow I/O).
 * A holder's guard GUARD(last) is its self-abort rule: it acts only while its
 * last successful write was sent less than HALF ticks ago. In ticks the
 * implementation's TTL/2-before-TTL margin becomes HALF = TTL = 2: a holder
 * stops acting at age 2, others see it stale only above age 2 (HALF = 4,
 * i.e. acting while already stale, is the late_abort variant). Timing assumption, as
 * enforced by the implementation's request deadlines: a request sent under
 * the guard lands while the guard still holds (modelled as one atomic step).
 *
 * Variants (compile-time):
 *   BROKEN_WRITER  the writer does not read the prune lease after creating
 *                  its own: spin must find a violation.
 *   NO_FENCE       the pruner deletes without confirming its lease by CAS
 *                  first: spin must find a violation.
 *   HALF=4         the holder self-aborts only after its lease is stale
 *                  (no margin): spin must find a violation.
 *   NP, MAXT       pruners (default 1; 2 in the long run) and time bound.
 */

#ifndef TTL
#define TTL  2
#endif
#ifndef HALF
#define HALF 2
#endif
#ifndef MAXT
#define MAXT 4
#endif
#ifndef NP
#define NP 1
#endif
#define NW 2

byte now = 0;

bool info[3];        /* narinfo+NAR of D, R1, R2 (write order I2 is tested elsewhere) */
bool marker[NW];     /* gcroots/<job i>: roots R(i+1) */

/* gcroots/.lock/prune */
bool pl;             /* exists */
byte pl_mt;          /* ModTime, store clock */
byte pl_own;         /* nonce of the writer of the current version */
/* The ETag is modelled by (pl_own, pl_mt): only the owner rewrites its own
 * lease, and a takeover needs a stale pl_mt, so a version is never reused
 * (no ABA). A holder's CAS on "its" ETag succeeds iff the lease still
 * carries its nonce (ambiguous own writes are adopted by reading back). */

/* gcroots/.lock/<job>.<nonce>, one per writer */
bool wl[NW];
byte wl_mt[NW];

#define FRESH(mt)   (now - (mt) <= TTL)
#define GUARD(last) (now - (last) < HALF)

active proctype Clock() {
	do
	:: now < MAXT -> now++
	:: else -> break
	od
}

active proctype Safety() {
	assert((!marker[0] || (info[1] && info[0])) &&
	       (!marker[1] || (info[2] && info[0])))
}

proctype Writer(byte i) {
	byte last;       /* store time our latest successful write was sent */
	bool skipD;

	/* create own lease (unique key; a lost response is resolved by the
	 * nonce, with the same outcome as success) */
	atomic { wl[i] = true; wl_mt[i] = now; last = now }
#ifndef BROKEN_WRITER
	/* W1: read the prune lease only after our own lease exists */
	if
	:: atomic { pl && FRESH(pl_mt) -> wl[i] = false; last = 0 }
	   goto done   /* back off (a retry is a later writer) */
	:: atomic { !(pl && FRESH(pl_mt)) -> skip }
	fi;
#endif
	/* query (nix copy's queryValidPaths): is D already there? */
	if
	:: atomic { GUARD(last) -> skipD = info[0] }
	:: atomic { !GUARD(last) -> goto abort }
	fi;
	/* upload what was missing, then the root (NAR before narinfo is I2,
	 * tested elsewhere); the background refresher may have fired just
	 * before (or failed) */
	if
	:: atomic { GUARD(last) -> info[0] = (info[0] || !skipD); info[i+1] = true; skipD = 0 }
	:: atomic { GUARD(last) -> wl_mt[i] = now; last = now; info[0] = (info[0] || !skipD); info[i+1] = true; skipD = 0 }
	:: atomic { !GUARD(last) -> goto abort }
	fi;
	/* Confirm (CAS refresh), then the marker */
	if
	:: atomic { GUARD(last) -> wl_mt[i] = now; last = now; marker[i] = true }
	:: atomic { !GUARD(last) -> goto abort }
	fi;
abort:
	atomic { wl[i] = false; last = 0; skipD = 0 }   /* release */
done:
	skip
}

proctype Pruner(byte me) {   /* me >= 1: its nonce */
	byte last, sent, seenown, seenmt;
	byte tries = 0;
	bool k1, k2;

acquire:
	sent = now;
	if
	:: atomic { !pl -> pl = true; pl_mt = now; pl_own = me; last = sent; sent = 0 }
	   goto held
	:: atomic { !pl -> pl = true; pl_mt = now; pl_own = me }   /* applied, response lost */
	   goto readback
	:: atomic { pl -> skip }                                   /* 412 */
	   goto readback
	fi;
readback:   /* A1: read the nonce back */
	if
	:: atomic { pl && pl_own == me -> last = sent; sent = 0 }
	   goto held
	:: atomic { pl && pl_own != me && !FRESH(pl_mt) -> seenown = pl_own; seenmt = pl_mt; sent = now }
	   /* T1: take over the stale lease by CAS on the ETag judged stale */
	   if
	   :: atomic { pl && pl_own == seenown && pl_mt == seenmt -> pl_mt = now; pl_own = me; last = sent; sent = 0; seenown = 0; seenmt = 0 }
	      goto held
	   :: atomic { !(pl && pl_own == seenown && pl_mt == seenmt) -> seenown = 0; seenmt = 0 }
	      goto busy
	   fi
	:: atomic { pl && pl_own != me && FRESH(pl_mt) -> skip }
	   goto busy
	:: atomic { !pl -> skip }
	   goto busy
	fi;
busy:
	atomic { tries++; sent = 0 }
	if
	:: tries < 2 -> goto acquire
	:: else -> goto done
	fi;

held:
	/* P2: wait until no fresh writer lease remains (each lease read
	 * separately, as a listing does) */
	tries = 0;
waitw:
	if
	:: atomic { wl[0] && FRESH(wl_mt[0]) -> tries++ } ; goto busyw
	:: atomic { !(wl[0] && FRESH(wl_mt[0])) -> skip }
	fi;
	if
	:: atomic { wl[1] && FRESH(wl_mt[1]) -> tries++ } ; goto busyw
	:: atomic { !(wl[1] && FRESH(wl_mt[1])) -> skip }
	fi;
	goto roots;
busyw:
	/* refresh while waiting (or not: a failed refresh) */
	if
	:: atomic { GUARD(last) && pl && pl_own == me -> pl_mt = now; last = now }
	:: skip
	fi;
	if
	:: tries < 2 -> goto waitw
	:: else -> goto release
	fi;

roots:
	/* read the roots (each marker separately, only while the lease holds) */
	if
	:: atomic { GUARD(last) -> k1 = marker[0] }
	:: atomic { !GUARD(last) -> goto release }
	fi;
	if
	:: atomic { GUARD(last) -> k2 = marker[1] }
	:: atomic { !GUARD(last) -> goto release }
	fi;

	/* sweep in two batches (narinfo-level objects; D last), each fenced
	 * by Confirm (F1) */
#ifdef NO_FENCE
	atomic { info[1] = (info[1] && k1); info[2] = (info[2] && k2) };
	atomic { info[0] = (info[0] && (k1 || k2)) };
#else
	if
	:: atomic { GUARD(last) && pl && pl_own == me -> pl_mt = now; last = now; info[1] = (info[1] && k1); info[2] = (info[2] && k2) }
	:: atomic { !(GUARD(last) && pl && pl_own == me) -> goto release }
	fi;
	if
	:: atomic { GUARD(last) && pl && pl_own == me -> pl_mt = now; last = now; info[0] = (info[0] && (k1 || k2)) }
	:: atomic { !(GUARD(last) && pl && pl_own == me) -> goto release }
	fi;
#endif

release:   /* L1: delete only our own version */
	atomic { if :: pl && pl_own == me -> pl = false :: else -> skip fi; last = 0; k1 = 0; k2 = 0; tries = 0 }
done:
	skip
}

init {
	atomic {
		info[0] = true;
		run Writer(0);
		run Writer(1);
		run Pruner(1);
#if NP > 1
		run Pruner(2);
#endif
	}
}
