# mk/common.mk - compiler flags shared by every part of the build.
#
#   make                          optimised build, warnings are errors
#   make SANITIZER=address,undefined   same code built with ASan + UBSan
#   make V=1                      show full compile lines

CC           ?= cc
OPTIMIZATION ?= -O2
STD          := -std=c11 -D_GNU_SOURCE
# -Wno-format-truncation: snprintf into fixed buffers is how this code
# truncates on purpose (error messages, labels); GCC's guess at the output
# length also changes with the optimisation level, which would make the
# sanitizer build fail where the -O2 build passes.
WARN         := -Wall -Wextra -Werror -Wmissing-prototypes -Wvla -Wwrite-strings \
                -fno-common -Wno-unused-parameter -Wno-format-truncation
DEBUG        ?= -g
CFLAGS_EXTRA ?=

ifneq ($(SANITIZER),)
  SANFLAGS   := -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  OPTIMIZATION := -O1
endif

LP_CFLAGS  := $(STD) $(OPTIMIZATION) $(DEBUG) $(WARN) $(SANFLAGS) -pthread -MMD -MP \
              -I/usr/include/postgresql \
              -I$(TOP)/common/include $(CFLAGS_EXTRA)
LP_LDFLAGS := $(SANFLAGS) -pthread
LP_LIBS    := -lcivetweb -lrdkafka -lhiredis -lpq -ljansson -lconfig -lcurl -lcrypto -luuid -lprotobuf-c -lz -lm -ldl

ifeq ($(V),1)
  Q :=
  say = @true
else
  Q := @
  say = @printf '  %-6s %s\n' $(1) $(2)
endif
