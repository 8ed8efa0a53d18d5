/* weft.h — umbrella header: a work-stealing fiber runtime over io_uring. */
#ifndef WEFT_H
#define WEFT_H

#include "weft/common.h"
#include "weft/runtime.h"
#include "weft/task.h"
#include "weft/deadline.h"
#include "weft/chan.h"
#include "weft/sync.h"
#include "weft/rwlock.h"
#include "weft/once.h"
#include "weft/group.h"
#include "weft/blocking.h"
#include "weft/metrics.h"
#include "weft/debug.h"
#include "weft/io.h"
#include "weft/net.h"
#include "weft/conn.h"
#include "weft/signal.h"
#include "weft/sim.h"

#endif
