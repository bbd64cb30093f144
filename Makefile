# logpipe - top-level build.  See README.md for the two commands that matter:
# `make run` and `make test`.

TOP := $(CURDIR)
include mk/common.mk

BUILD    ?= build
ifneq ($(SANITIZER),)
  BUILD  := build-san
endif

SERVICES := gateway producer consumer enricher metadata-svc generator
BINNAMES := gateway producer consumer enricher metadata generator
BINS     := $(addprefix $(BUILD)/bin/logpipe-,$(BINNAMES))

LIB_SRC  := $(wildcard common/src/*.c)
LIB_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC))
LIB      := $(BUILD)/liblogpipe.a

UNIT_SRC := $(wildcard common/tests/test_*.c) $(wildcard $(addsuffix /tests/test_*.c,$(SERVICES)))
UNIT_BIN := $(patsubst %.c,$(BUILD)/%,$(UNIT_SRC))

TOOLS_SRC := $(wildcard tools/*.c)
TOOLS     := $(patsubst tools/%.c,$(BUILD)/bin/%,$(TOOLS_SRC))

.PHONY: all asan test unit integration run deps clean bench chaos fmt test-compose
all: $(BINS) $(TOOLS)

asan:
	$(MAKE) SANITIZER=address,undefined all

$(BUILD)/%.o: %.c
	$(call say,CC,$<)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(LP_CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

# Each service: every .c in its folder except tests/, linked with liblogpipe.
define service_rule
$(1)_SRC := $$(wildcard $(1)/*.c)
$(1)_OBJ := $$(patsubst %.c,$$(BUILD)/%.o,$$($(1)_SRC))
$$(BUILD)/bin/logpipe-$(2): $$($(1)_OBJ) $$(LIB)
	$$(call say,LD,$$@)
	@mkdir -p $$(dir $$@)
	$$(Q)$$(CC) $$(LP_LDFLAGS) -o $$@ $$^ $$(LP_LIBS)
endef
$(foreach i,1 2 3 4 5 6,$(eval $(call service_rule,$(word $(i),$(SERVICES)),$(word $(i),$(BINNAMES)))))

# The OTLP messages the producer's /v1/logs decodes (producer/otlp.c):
# producer/proto/**/*.proto compiled by protoc-c into $(BUILD)/gen, linked
# into the producer and its unit tests (before svc_test_rule reads
# producer_OBJ below).
PROTO_DIR := producer/proto
PROTO_SRC := $(shell find $(PROTO_DIR) -name '*.proto')
GEN       := $(BUILD)/gen
PB_C      := $(patsubst $(PROTO_DIR)/%.proto,$(GEN)/%.pb-c.c,$(PROTO_SRC))
PB_H      := $(PB_C:.c=.h)
PB_OBJ    := $(PB_C:.c=.o)
$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: $(PROTO_DIR)/%.proto
	$(call say,PROTOC,$<)
	@mkdir -p $(GEN)
	$(Q)protoc-c --proto_path=$(PROTO_DIR) --c_out=$(GEN) $<
$(GEN)/%.o: $(GEN)/%.c $(PB_H)
	$(call say,CC,$<)
	$(Q)$(CC) $(LP_CFLAGS) -I$(GEN) -c $< -o $@
OTLP_USERS := $(BUILD)/producer/otlp.o $(BUILD)/fuzz/fuzz_otlp.o $(BUILD)/producer/tests/test_otlp.o
$(OTLP_USERS): $(PB_H)
$(OTLP_USERS): LP_CFLAGS += -I$(GEN)
producer_OBJ += $(PB_OBJ)
$(BUILD)/bin/logpipe-producer: $(PB_OBJ)

# The dashboard page is embedded with .incbin (gateway/dashboard_page.c).
$(BUILD)/gateway/dashboard_page.o: gateway/dashboard/index.html

# Service unit tests link the service's objects minus main.o.
$(BUILD)/%/tests/test_%: ;
$(BUILD)/common/tests/%: $(BUILD)/common/tests/%.o $(LIB)
	$(call say,LD,$@)
	$(Q)$(CC) $(LP_LDFLAGS) -o $@ $^ $(LP_LIBS) -lcmocka

define svc_test_rule
$$(BUILD)/$(1)/tests/%: $$(BUILD)/$(1)/tests/%.o $$(filter-out %/main.o,$$($(1)_OBJ)) $$(LIB)
	$$(call say,LD,$$@)
	$$(Q)$$(CC) $$(LP_LDFLAGS) -o $$@ $$^ $$(LP_LIBS) -lcmocka
endef
$(foreach s,$(SERVICES),$(eval $(call svc_test_rule,$(s))))
# The enricher's pipeline test fails the consumer's rewind on demand.
$(BUILD)/enricher/tests/test_pipeline: LP_LDFLAGS += -Wl,--wrap=lp_kconsumer_rewind

$(BUILD)/bin/%: $(BUILD)/tools/%.o $(LIB)
	$(call say,LD,$@)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(LP_LDFLAGS) -o $@ $^ $(LP_LIBS)

# ---- fuzzing ---------------------------------------------------------------
# `make fuzz` builds the libFuzzer targets fuzz/fuzz_*.c with clang, ASan and
# UBSan (the common library compiled again with clang, for coverage) into
# build-fuzz/; `make fuzz-run FUZZ_SECONDS=N` runs each for N seconds on its
# corpus.  `make fuzz-regress` builds the same targets with $(CC) and
# fuzz/replay.c as main() and replays the seed corpus and tests/fuzz_regress/
# once: no clang needed.
FUZZ_CC      ?= clang
FUZZ_BUILD   := build-fuzz
FUZZ_SECONDS ?= 10
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer
FUZZ_CFLAGS  := $(STD) -O1 -g $(WARN) -Wno-unknown-warning-option $(FUZZ_SAN) -fsanitize=fuzzer-no-link -pthread -MMD -MP \
                -I/usr/include/postgresql -I$(TOP)/common/include
FUZZ_NAMES   := $(patsubst fuzz/%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_BINS    := $(addprefix $(FUZZ_BUILD)/,$(FUZZ_NAMES))
FUZZ_REPLAYS := $(addprefix $(BUILD)/fuzz/,$(FUZZ_NAMES))
FUZZ_LIB     := $(FUZZ_BUILD)/liblogpipe.a
# Service sources a target exercises besides the common library.
FUZZ_SRC_fuzz_cursor    := consumer/query.c consumer/store.c
FUZZ_SRC_fuzz_query     := consumer/query.c consumer/store.c
FUZZ_SRC_fuzz_apikeys   := gateway/auth.c
FUZZ_SRC_fuzz_genparams := generator/params.c
FUZZ_SRC_fuzz_metadata  := metadata-svc/record.c
FUZZ_SRC_fuzz_spool     := producer/spool.c
FUZZ_SRC_fuzz_reqhead   :=
FUZZ_SRC_fuzz_otlp      := producer/otlp.c
FUZZ_SRC_fuzz_syslog    := producer/syslog.c
FUZZ_SRC_fuzz_store_fast := consumer/store.c
# fuzz_otlp also links the generated OTLP messages (see PB_OBJ above).
FUZZ_PB_OBJ := $(patsubst $(GEN)/%,$(FUZZ_BUILD)/gen/%,$(PB_OBJ))
$(FUZZ_BUILD)/gen/%.o: $(GEN)/%.c $(PB_H)
	$(call say,CLANG,$<)
	@mkdir -p $(dir $@)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -I$(GEN) -c $< -o $@
$(FUZZ_BUILD)/producer/otlp.o $(FUZZ_BUILD)/fuzz/fuzz_otlp.o: $(PB_H)
$(FUZZ_BUILD)/producer/otlp.o $(FUZZ_BUILD)/fuzz/fuzz_otlp.o: FUZZ_CFLAGS += -I$(GEN)
$(FUZZ_BUILD)/fuzz_otlp: $(FUZZ_PB_OBJ)
$(BUILD)/fuzz/fuzz_otlp: $(PB_OBJ)

.PHONY: fuzz fuzz-run fuzz-regress
fuzz: $(FUZZ_BINS)

fuzz-run: fuzz
	@scripts/fuzz-smoke.sh --no-build $(FUZZ_SECONDS)

fuzz-regress: $(FUZZ_REPLAYS)
	@scripts/fuzz-smoke.sh --replay $(FUZZ_REPLAYS)

$(FUZZ_BUILD)/%.o: %.c
	$(call say,CLANG,$<)
	@mkdir -p $(dir $@)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_LIB): $(patsubst %.c,$(FUZZ_BUILD)/%.o,$(LIB_SRC))
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

define fuzz_rule
$(FUZZ_BUILD)/$(1): $(FUZZ_BUILD)/fuzz/$(1).o $(patsubst %.c,$(FUZZ_BUILD)/%.o,$(FUZZ_SRC_$(1))) $(FUZZ_LIB)
	$$(call say,LD,$$@)
	$$(Q)$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -pthread -o $$@ $$^ $(LP_LIBS)
$(BUILD)/fuzz/$(1): $(BUILD)/fuzz/$(1).o $(BUILD)/fuzz/replay.o $(patsubst %.c,$(BUILD)/%.o,$(FUZZ_SRC_$(1))) $(LIB)
	$$(call say,LD,$$@)
	$$(Q)$(CC) $(LP_LDFLAGS) -o $$@ $$^ $(LP_LIBS)
endef
$(foreach t,$(FUZZ_NAMES),$(eval $(call fuzz_rule,$(t))))

# ---- dependencies -------------------------------------------------------
deps:
	@scripts/install-deps.sh

# ---- tests ---------------------------------------------------------------
unit: $(UNIT_BIN)
	@scripts/run-unit.sh $(UNIT_BIN)

# The integration suite alone, against the optimised build (`make test` runs
# it against build-san/); every test, two workers (scripts/run-integration.sh).
integration: all
	@scripts/run-integration.sh

test: deps
	@$(MAKE) --no-print-directory all
	@scripts/test-all.sh

# The compose stack for real (deploy/compose/compose.yaml on a Docker engine,
# no image registry needed): builds every image, brings the stack up, checks
# health, the seeds' curls, published ports, Prometheus, a producer crash,
# and takes it down (tests/compose/run.py, docs/deployment.md).  Not inside
# `make test` (its time budget): .ci/run runs it after.
test-compose: deps
	@/usr/bin/python3 tests/compose/run.py

# The chaos drill of issue 6: kills and restarts services and infrastructure
# under load, then checks every event answered 202 is stored exactly once.
chaos: deps
	@$(MAKE) --no-print-directory all
	@/usr/bin/python3 tests/chaos/chaos.py

# Benchmarks print figures (docs/benchmarks.md records them); they are not
# pass/fail tests.  BENCH=name runs one of tests/bench/*.
bench: deps
	@$(MAKE) --no-print-directory all
	@scripts/bench-all.sh $(BENCH)

run: deps
	@$(MAKE) --no-print-directory all
	@exec /usr/bin/python3 deploy/local/runner.py

clean:
	rm -rf build build-san build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
-include $(shell find $(FUZZ_BUILD) -name '*.d' 2>/dev/null)
