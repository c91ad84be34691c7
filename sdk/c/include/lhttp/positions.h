/*
 * Positions on history channels: duplicates and live gaps.
 *
 * A node run with --history stamps each message of a history channel with
 * its position: `lhttp-node:position` first, then `channel`, `offset`,
 * `epoch` and `prev` (the offset of the message before it on the channel,
 * 0 when none), before the publisher's headers.  A tracker keeps, per
 * channel, the last offset and epoch delivered, and tells for each received
 * message whether to deliver it:
 *
 *   - LHTTP_POSITION_DELIVER: deliver it (its position is noted).  Also
 *     every message that is not a position the node stamped.
 *   - LHTTP_POSITION_DUPLICATE: seen already (same epoch, offset not newer):
 *     drop it.
 *   - LHTTP_POSITION_GAP: its `prev` is past the last offset delivered, same
 *     epoch: messages were lost on the way.  Drop it and send the
 *     re-subscribe lhttp_gap_resubscribe() builds; the node answers with a
 *     `recovery` reply (pass it to lhttp_positions_recovery()), then sends
 *     the messages after the last offset again, in order.
 *   - LHTTP_POSITION_HELD: its channel is recovering a gap: drop it (the
 *     node sends it again after its recovery reply), or keep it to pass to
 *     lhttp_positions_check() again if you give up (lhttp_positions_give_up).
 *
 * A gap is reported once per position: a node that keeps saying so (or a
 * client's forged `prev` relayed by a node older than `prev`) cannot make
 * the client loop.  A message without `prev` (an older node), or with a
 * malformed one, is never a gap.
 *
 * The tracker allocates (one entry per channel seen); the codec does not.
 * Not thread-safe: use one tracker from one thread.
 */
#ifndef LHTTP_POSITIONS_H
#define LHTTP_POSITIONS_H

#include "lhttp/codec.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lhttp_positions lhttp_positions;

typedef enum lhttp_position_verdict {
    LHTTP_POSITION_DELIVER = 0,
    LHTTP_POSITION_DUPLICATE = 1,
    LHTTP_POSITION_GAP = 2,
    LHTTP_POSITION_HELD = 3
} lhttp_position_verdict;

/* A live gap: where to recover from.  The slices point into the message checked. */
typedef struct lhttp_gap {
    lhttp_str channel;
    unsigned long long since;   /* the last offset delivered */
    lhttp_str epoch;
} lhttp_gap;

typedef struct lhttp_positions_stats {
    unsigned long long duplicates;      /* messages reported DUPLICATE */
    unsigned long long gaps;            /* gaps reported */
    unsigned long long gaps_recovered;  /* gaps whose recovery reply said recovered:true */
    unsigned long long malformed;       /* position messages with a malformed prev (ignored) */
} lhttp_positions_stats;

/* A new, empty tracker, or NULL when out of memory. */
lhttp_positions *lhttp_positions_new(void);

/* Free a tracker (NULL is fine). */
void lhttp_positions_free(lhttp_positions *tracker);

/*
 * What to do with `msg` (an lhttp_position_verdict, >= 0), or a negative
 * status: LHTTP_E_ARGUMENT, LHTTP_E_NO_MEMORY.  On LHTTP_POSITION_GAP,
 * `*gap` (when not NULL) says where to recover from.
 */
int lhttp_positions_check(lhttp_positions *tracker, const lhttp_message *msg,
                          lhttp_gap *gap);

/*
 * The node's `recovery` reply to a subscribe with since (after a gap or a
 * reconnect): ends the channel's gap recovery; a new epoch starts its
 * offsets again (0); `history:none` forgets the channel; `recovered:false`
 * lets the next message through whatever its prev (the loss was reported).
 * `*was_gap` (when not NULL) is set to 1 when it ended a gap recovery, else
 * 0.  A message that is not the node's recovery reply is ignored (LHTTP_OK,
 * `*was_gap` 0).  Errors: LHTTP_E_ARGUMENT, LHTTP_E_NO_MEMORY.
 */
int lhttp_positions_recovery(lhttp_positions *tracker, const lhttp_message *msg,
                             int *was_gap);

/*
 * No recovery reply came in time (your timeout; the JS and Python SDKs wait
 * 10 s): the channel's messages are checked again, and the next one is
 * delivered whatever its prev.  Messages dropped as HELD meanwhile are lost
 * unless you kept them (check them again now) or read them with a `history`
 * request.  Returns 1 if `channel` was recovering, else 0.
 */
int lhttp_positions_give_up(lhttp_positions *tracker, lhttp_str channel);

/* Forget a channel (after unsubscribing): subscribing again starts afresh. */
void lhttp_positions_forget(lhttp_positions *tracker, lhttp_str channel);

/*
 * The last position delivered on `channel`: `*offset`, and `*epoch` pointing
 * into the tracker (valid until the next call that changes it).
 * LHTTP_E_NOT_FOUND when none is known.
 */
int lhttp_positions_get(const lhttp_positions *tracker, lhttp_str channel,
                        unsigned long long *offset, lhttp_str *epoch);

/* Whether `channel` is recovering a gap (1) or not (0). */
int lhttp_positions_recovering(const lhttp_positions *tracker, lhttp_str channel);

void lhttp_positions_get_stats(const lhttp_positions *tracker,
                               lhttp_positions_stats *stats);

/*
 * Serialize the re-subscribe that recovers `gap` into `out` (capacity `cap`):
 *
 *     LHTTP/1.0 subscribe\r\nsubscribe:<channel>\r\nsince:<channel>=<since>\r\nepoch:<channel>=<epoch>\r\n\r\n
 *
 * `*written` gets the bytes written, or the bytes needed on LHTTP_E_NO_SPACE.
 * Errors: LHTTP_E_ARGUMENT, LHTTP_E_NO_SPACE, LHTTP_E_VALUE.
 */
int lhttp_gap_resubscribe(const lhttp_gap *gap, char *out, size_t cap, size_t *written);

#ifdef __cplusplus
}
#endif

#endif /* LHTTP_POSITIONS_H */
