//! synchdb core: everything that is not PostgreSQL-facing glue. The shim (shim/*.c)
//! calls in through `ffi`; see DESIGN.md for the architecture.
pub mod apply;
pub mod cleanup;
pub mod config;
pub mod conflict;
pub mod control;
pub mod copyformat;
pub mod ddl;
pub mod decoder;
pub mod error;
pub mod ffi;
pub mod net;
pub mod objects;
pub mod objmap;
pub mod offset;
pub mod ownership;
pub mod parallel;
pub mod pg;
pub mod pgpass;
pub mod replconn;
pub mod secret;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod tls;
pub mod usertypes;
pub mod worker;
