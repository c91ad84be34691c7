/* Positions on history channels: duplicates and live gaps (lhttp/positions.h). */
#include "lhttp/positions.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char *channel;
    size_t channel_len;
    char *epoch;                /* NULL: no position known */
    size_t epoch_len;
    unsigned long long offset;
    int recovering;             /* a gap's re-subscribe is waiting for its recovery reply */
    int unchecked;              /* the next message is not gap-checked */
    int gap_at_set;
    unsigned long long gap_at;  /* the offset a gap was last reported from */
} entry;

struct lhttp_positions {
    entry *entries;
    size_t count;
    size_t cap;
    lhttp_positions_stats stats;
};

lhttp_positions *lhttp_positions_new(void)
{
    return calloc(1, sizeof(lhttp_positions));
}

void lhttp_positions_free(lhttp_positions *tracker)
{
    size_t i;
    if (tracker == NULL)
        return;
    for (i = 0; i < tracker->count; i++) {
        free(tracker->entries[i].channel);
        free(tracker->entries[i].epoch);
    }
    free(tracker->entries);
    free(tracker);
}

static int same(const char *a, size_t alen, lhttp_str b)
{
    return alen == b.len && (alen == 0 || memcmp(a, b.ptr, alen) == 0);
}

static entry *find(const lhttp_positions *tracker, lhttp_str channel)
{
    size_t i;
    for (i = 0; i < tracker->count; i++) {
        if (same(tracker->entries[i].channel, tracker->entries[i].channel_len, channel))
            return &tracker->entries[i];
    }
    return NULL;
}

static char *copy(lhttp_str s)
{
    char *out = malloc(s.len + 1);
    if (out == NULL)
        return NULL;
    if (s.len)
        memcpy(out, s.ptr, s.len);
    out[s.len] = '\0';
    return out;
}

static entry *find_or_add(lhttp_positions *tracker, lhttp_str channel)
{
    entry *e = find(tracker, channel);
    if (e != NULL)
        return e;
    if (tracker->count == tracker->cap) {
        size_t cap = tracker->cap ? tracker->cap * 2 : 8;
        entry *grown = realloc(tracker->entries, cap * sizeof(entry));
        if (grown == NULL)
            return NULL;
        tracker->entries = grown;
        tracker->cap = cap;
    }
    e = &tracker->entries[tracker->count];
    memset(e, 0, sizeof(*e));
    e->channel = copy(channel);
    if (e->channel == NULL)
        return NULL;
    e->channel_len = channel.len;
    tracker->count++;
    return e;
}

static int set_position(entry *e, unsigned long long offset, lhttp_str epoch)
{
    if (e->epoch == NULL || !same(e->epoch, e->epoch_len, epoch)) {
        char *epoch_copy = copy(epoch);
        if (epoch_copy == NULL)
            return LHTTP_E_NO_MEMORY;
        free(e->epoch);
        e->epoch = epoch_copy;
        e->epoch_len = epoch.len;
    }
    e->offset = offset;
    return LHTTP_OK;
}

int lhttp_positions_check(lhttp_positions *tracker, const lhttp_message *msg,
                          lhttp_gap *gap)
{
    const lhttp_str *channel, *offset_text, *epoch, *prev_text;
    unsigned long long offset, prev;
    entry *e;
    int has_prev;
    if (tracker == NULL || msg == NULL)
        return LHTTP_E_ARGUMENT;
    /* Only the node's stamp is a position; its headers come first, so the
     * first of each name is the node's, not the publisher's. */
    if (lhttp_node_kind_of(msg) != LHTTP_NODE_POSITION)
        return LHTTP_POSITION_DELIVER;
    channel = lhttp_get_header(msg, "channel");
    offset_text = lhttp_get_header(msg, "offset");
    epoch = lhttp_get_header(msg, "epoch");
    if (channel == NULL || offset_text == NULL || epoch == NULL ||
        lhttp_parse_u64(*offset_text, &offset) != LHTTP_OK)
        return LHTTP_POSITION_DELIVER;
    e = find_or_add(tracker, *channel);
    if (e == NULL)
        return LHTTP_E_NO_MEMORY;
    if (e->recovering)
        return LHTTP_POSITION_HELD;
    if (e->epoch != NULL && same(e->epoch, e->epoch_len, *epoch)) {
        if (offset <= e->offset) {
            tracker->stats.duplicates++;
            return LHTTP_POSITION_DUPLICATE;
        }
        prev_text = lhttp_get_header(msg, "prev");
        has_prev = 0;
        if (prev_text != NULL) {
            if (lhttp_parse_u64(*prev_text, &prev) == LHTTP_OK)
                has_prev = 1;
            else
                tracker->stats.malformed++;
        }
        if (has_prev && prev > e->offset && !e->unchecked &&
            !(e->gap_at_set && e->gap_at == e->offset)) {
            e->recovering = 1;
            e->gap_at_set = 1;
            e->gap_at = e->offset;
            tracker->stats.gaps++;
            if (gap != NULL) {
                gap->channel = *channel;
                gap->since = e->offset;
                gap->epoch = *epoch;
            }
            return LHTTP_POSITION_GAP;
        }
    }
    e->unchecked = 0;
    if (set_position(e, offset, *epoch) != LHTTP_OK)
        return LHTTP_E_NO_MEMORY;
    return LHTTP_POSITION_DELIVER;
}

int lhttp_positions_recovery(lhttp_positions *tracker, const lhttp_message *msg,
                             int *was_gap)
{
    const lhttp_str *channel, *recovered, *history, *epoch;
    int complete;
    entry *e;
    if (was_gap != NULL)
        *was_gap = 0;
    if (tracker == NULL || msg == NULL)
        return LHTTP_E_ARGUMENT;
    if (lhttp_node_kind_of(msg) != LHTTP_NODE_REPLY || !lhttp_str_ieq(msg->command, "recovery"))
        return LHTTP_OK;
    channel = lhttp_get_header(msg, "channel");
    if (channel == NULL)
        return LHTTP_OK;
    e = find_or_add(tracker, *channel);
    if (e == NULL)
        return LHTTP_E_NO_MEMORY;
    recovered = lhttp_get_header(msg, "recovered");
    complete = recovered != NULL && same("true", 4, *recovered);
    if (e->recovering) {
        e->recovering = 0;
        if (was_gap != NULL)
            *was_gap = 1;
        if (complete)
            tracker->stats.gaps_recovered++;
    }
    if (!complete)
        e->unchecked = 1;
    history = lhttp_get_header(msg, "history");
    epoch = lhttp_get_header(msg, "epoch");
    if (history != NULL && same("none", 4, *history)) {
        free(e->epoch);
        e->epoch = NULL;
        e->epoch_len = 0;
        e->offset = 0;
    } else if (epoch != NULL && (e->epoch == NULL || !same(e->epoch, e->epoch_len, *epoch))) {
        /* A new epoch: its offsets start again, and all it kept follows. */
        if (set_position(e, 0, *epoch) != LHTTP_OK)
            return LHTTP_E_NO_MEMORY;
    }
    return LHTTP_OK;
}

int lhttp_positions_give_up(lhttp_positions *tracker, lhttp_str channel)
{
    entry *e;
    if (tracker == NULL)
        return 0;
    e = find(tracker, channel);
    if (e == NULL || !e->recovering)
        return 0;
    e->recovering = 0;
    return 1;
}

void lhttp_positions_forget(lhttp_positions *tracker, lhttp_str channel)
{
    entry *e;
    if (tracker == NULL)
        return;
    e = find(tracker, channel);
    if (e == NULL)
        return;
    free(e->channel);
    free(e->epoch);
    *e = tracker->entries[--tracker->count];
}

int lhttp_positions_get(const lhttp_positions *tracker, lhttp_str channel,
                        unsigned long long *offset, lhttp_str *epoch)
{
    const entry *e;
    if (tracker == NULL)
        return LHTTP_E_ARGUMENT;
    e = find(tracker, channel);
    if (e == NULL || e->epoch == NULL)
        return LHTTP_E_NOT_FOUND;
    if (offset != NULL)
        *offset = e->offset;
    if (epoch != NULL) {
        epoch->ptr = e->epoch;
        epoch->len = e->epoch_len;
    }
    return LHTTP_OK;
}

int lhttp_positions_recovering(const lhttp_positions *tracker, lhttp_str channel)
{
    const entry *e = tracker != NULL ? find(tracker, channel) : NULL;
    return e != NULL && e->recovering;
}

void lhttp_positions_get_stats(const lhttp_positions *tracker,
                               lhttp_positions_stats *stats)
{
    if (stats == NULL)
        return;
    if (tracker == NULL)
        memset(stats, 0, sizeof(*stats));
    else
        *stats = tracker->stats;
}

int lhttp_gap_resubscribe(const lhttp_gap *gap, char *out, size_t cap, size_t *written)
{
    char since[24];
    char *since_value, *epoch_value;
    lhttp_header headers[3];
    lhttp_message msg;
    int digits, status;
    size_t c = 0;
    if (gap == NULL || written == NULL || gap->channel.len == 0 || gap->channel.ptr == NULL)
        return LHTTP_E_ARGUMENT;
    digits = snprintf(since, sizeof(since), "%llu", gap->since);
    if (digits < 0)
        return LHTTP_E_ARGUMENT;
    /* <channel>=<since> and <channel>=<epoch> */
    since_value = malloc(gap->channel.len + 1 + (size_t)digits + 1);
    epoch_value = malloc(gap->channel.len + 1 + gap->epoch.len + 1);
    if (since_value == NULL || epoch_value == NULL) {
        free(since_value);
        free(epoch_value);
        return LHTTP_E_NO_MEMORY;
    }
    memcpy(since_value, gap->channel.ptr, gap->channel.len);
    since_value[gap->channel.len] = '=';
    memcpy(since_value + gap->channel.len + 1, since, (size_t)digits);
    memcpy(epoch_value, gap->channel.ptr, gap->channel.len);
    epoch_value[gap->channel.len] = '=';
    if (gap->epoch.len)
        memcpy(epoch_value + gap->channel.len + 1, gap->epoch.ptr, gap->epoch.len);
    headers[c].name = lhttp_cstr("subscribe");
    headers[c++].value = gap->channel;
    headers[c].name = lhttp_cstr("since");
    headers[c].value.ptr = since_value;
    headers[c++].value.len = gap->channel.len + 1 + (size_t)digits;
    if (gap->epoch.len) {
        headers[c].name = lhttp_cstr("epoch");
        headers[c].value.ptr = epoch_value;
        headers[c++].value.len = gap->channel.len + 1 + gap->epoch.len;
    }
    msg.command = lhttp_cstr("subscribe");
    msg.headers = headers;
    msg.header_count = c;
    msg.body = lhttp_cstr(NULL);
    status = lhttp_serialize(&msg, out, cap, written);
    free(since_value);
    free(epoch_value);
    return status;
}
