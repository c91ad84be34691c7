/* The position tracker (lhttp/positions.h): duplicates and live gaps on history channels. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "lhttp/positions.h"

/* Parsed messages must outlive their checks: each gets its own buffer. */
typedef struct parsed {
    char raw[512];
    lhttp_header headers[16];
    lhttp_message msg;
} parsed;

static parsed slots[64];
static size_t used = 0;

static const lhttp_message *parse_text(const char *text)
{
    parsed *p = &slots[used++ % 64];
    size_t len = strlen(text);
    snprintf(p->raw, sizeof(p->raw), "%s", text);
    if (lhttp_parse(p->raw, len, &p->msg, p->headers, 16) != LHTTP_OK) {
        fprintf(stderr, "test message does not parse: %s\n", text);
        return NULL;
    }
    return &p->msg;
}

/* As a node that stamps prev sends it; prev NULL: an older node. */
static const lhttp_message *stamped(const char *channel, unsigned long long offset,
                                    const char *epoch, const char *prev, const char *extra,
                                    const char *body)
{
    char text[512];
    char prev_line[64] = "";
    if (prev != NULL)
        snprintf(prev_line, sizeof(prev_line), "prev:%s\r\n", prev);
    snprintf(text, sizeof(text),
             "LHTTP/1.0 chat\r\nlhttp-node:position\r\nchannel:%s\r\noffset:%llu\r\nepoch:%s\r\n%s"
             "publish:%s\r\n%s\r\n%s",
             channel, offset, epoch, prev_line, channel, extra ? extra : "", body);
    return parse_text(text);
}

static const lhttp_message *recovery(const char *channel, const char *recovered,
                                     const char *epoch, unsigned long long since)
{
    char text[512];
    snprintf(text, sizeof(text),
             "LHTTP/1.0 recovery\r\nlhttp-node:reply\r\nchannel:%s\r\nrecovered:%s\r\nepoch:%s\r\n"
             "since:%llu\r\ncount:0\r\noffset:0\r\ncommand:subscribe\r\n\r\n",
             channel, recovered, epoch, since);
    return parse_text(text);
}

static int check(lhttp_positions *t, const lhttp_message *msg)
{
    return lhttp_positions_check(t, msg, NULL);
}

static void test_gap_recovered(void)
{
    lhttp_positions *t = lhttp_positions_new();
    lhttp_gap gap;
    lhttp_positions_stats stats;
    char out[256];
    size_t written = 0;
    unsigned long long offset = 0;
    lhttp_str epoch;
    int was_gap = -1;
    const char *expected = "LHTTP/1.0 subscribe\r\nsubscribe:room.a\r\nsince:room.a=5\r\nepoch:room.a=e1\r\n\r\n";
    const lhttp_message *m11;

    CHECK(t != NULL);
    CHECK_EQ_INT(check(t, stamped("room.a", 3, "e1", "0", NULL, "m3")), LHTTP_POSITION_DELIVER);
    CHECK_EQ_INT(check(t, stamped("room.a", 5, "e1", "3", NULL, "m5")), LHTTP_POSITION_DELIVER);
    /* 7 and 9 lost on the way: 11 says its predecessor is 9. */
    m11 = stamped("room.a", 11, "e1", "9", NULL, "m11");
    memset(&gap, 0, sizeof(gap));
    CHECK_EQ_INT(lhttp_positions_check(t, m11, &gap), LHTTP_POSITION_GAP);
    CHECK_STR(gap.channel, "room.a");
    CHECK_EQ_INT(gap.since, 5);
    CHECK_STR(gap.epoch, "e1");
    CHECK_EQ_INT(lhttp_gap_resubscribe(&gap, out, sizeof(out), &written), LHTTP_OK);
    CHECK_EQ_INT(written, strlen(expected));
    CHECK(written == strlen(expected) && memcmp(out, expected, written) == 0);
    /* Too small: the size needed is reported. */
    CHECK_EQ_INT(lhttp_gap_resubscribe(&gap, out, 10, &written), LHTTP_E_NO_SPACE);
    CHECK_EQ_INT(written, strlen(expected));
    CHECK_EQ_INT(lhttp_positions_get(t, lhttp_cstr("room.a"), &offset, &epoch), LHTTP_OK);
    CHECK_EQ_INT(offset, 5);
    CHECK(lhttp_positions_recovering(t, lhttp_cstr("room.a")));

    /* Until the node's recovery reply: held; other channels and plain messages go on. */
    CHECK_EQ_INT(check(t, stamped("room.a", 13, "e1", "11", NULL, "m13")), LHTTP_POSITION_HELD);
    CHECK_EQ_INT(check(t, parse_text("LHTTP/1.0 chat\r\npublish:plain\r\n\r\nhi")), LHTTP_POSITION_DELIVER);
    CHECK_EQ_INT(check(t, stamped("room.b", 40, "e1", "39", NULL, "b")), LHTTP_POSITION_DELIVER);

    CHECK_EQ_INT(lhttp_positions_recovery(t, recovery("room.a", "true", "e1", 5), &was_gap), LHTTP_OK);
    CHECK_EQ_INT(was_gap, 1);
    CHECK(!lhttp_positions_recovering(t, lhttp_cstr("room.a")));
    CHECK_EQ_INT(check(t, stamped("room.a", 7, "e1", "5", NULL, "m7")), LHTTP_POSITION_DELIVER);
    CHECK_EQ_INT(check(t, stamped("room.a", 9, "e1", "7", NULL, "m9")), LHTTP_POSITION_DELIVER);
    CHECK_EQ_INT(check(t, stamped("room.a", 11, "e1", "9", NULL, "m11")), LHTTP_POSITION_DELIVER);
    CHECK_EQ_INT(check(t, stamped("room.a", 13, "e1", "11", NULL, "m13")), LHTTP_POSITION_DELIVER);
    CHECK_EQ_INT(check(t, stamped("room.a", 13, "e1", "11", NULL, "late live copy")), LHTTP_POSITION_DUPLICATE);
    CHECK_EQ_INT(check(t, stamped("room.a", 15, "e1", "13", NULL, "m15")), LHTTP_POSITION_DELIVER);
    lhttp_positions_get_stats(t, &stats);
    CHECK_EQ_INT(stats.gaps, 1);
    CHECK_EQ_INT(stats.gaps_recovered, 1);
    CHECK_EQ_INT(stats.duplicates, 1);
    CHECK_EQ_INT(lhttp_positions_get(t, lhttp_cstr("room.a"), &offset, &epoch), LHTTP_OK);
    CHECK_EQ_INT(offset, 15);
    CHECK_STR(epoch, "e1");
    lhttp_positions_free(t);
}

static void test_no_gap(void)
{
    lhttp_positions *t = lhttp_positions_new();
    lhttp_positions_stats stats;
    CHECK_EQ_INT(check(t, stamped("room.a", 4, "e1", "2", NULL, "first")), LHTTP_POSITION_DELIVER);
    CHECK_EQ_INT(check(t, stamped("room.a", 6, "e1", "4", NULL, "next")), LHTTP_POSITION_DELIVER);
    CHECK_EQ_INT(check(t, stamped("room.a", 8, "e1", "1", NULL, "prev behind")), LHTTP_POSITION_DELIVER);
    CHECK_EQ_INT(check(t, stamped("room.a", 20, "e1", NULL, NULL, "older node")), LHTTP_POSITION_DELIVER);
    CHECK_EQ_INT(check(t, stamped("room.a", 3, "e2", "2", NULL, "new epoch")), LHTTP_POSITION_DELIVER);
    CHECK_EQ_INT(check(t, stamped("room.a", 3, "e2", "2", NULL, "again")), LHTTP_POSITION_DUPLICATE);
    lhttp_positions_get_stats(t, &stats);
    CHECK_EQ_INT(stats.gaps, 0);
    lhttp_positions_free(t);
}

static void test_forged_and_malformed_prev(void)
{
    lhttp_positions *t = lhttp_positions_new();
    lhttp_positions_stats stats;
    unsigned long long offset = 0;
    CHECK_EQ_INT(check(t, stamped("room.a", 1, "e1", "0", NULL, "m1")), LHTTP_POSITION_DELIVER);
    /* A client's message on a plain channel: no lhttp-node, no position. */
    CHECK_EQ_INT(check(t, parse_text("LHTTP/1.0 chat\r\nchannel:room.a\r\noffset:99\r\nepoch:e1\r\nprev:98\r\n"
                                     "publish:plain\r\n\r\nforged")), LHTTP_POSITION_DELIVER);
    /* The publisher's prev comes after the node's: not read. */
    CHECK_EQ_INT(check(t, stamped("room.a", 2, "e1", "1", "prev:1000\r\n", "honest")), LHTTP_POSITION_DELIVER);
    CHECK_EQ_INT(lhttp_positions_get(t, lhttp_cstr("room.a"), &offset, NULL), LHTTP_OK);
    CHECK_EQ_INT(offset, 2);
    CHECK_EQ_INT(check(t, stamped("room.a", 5, "e1", "-3", NULL, "minus")), LHTTP_POSITION_DELIVER);
    CHECK_EQ_INT(check(t, stamped("room.a", 9, "e1", "99999999999999999999", NULL, "too long")),
                 LHTTP_POSITION_DELIVER);
    lhttp_positions_get_stats(t, &stats);
    CHECK_EQ_INT(stats.gaps, 0);
    CHECK_EQ_INT(stats.malformed, 2);
    CHECK(!lhttp_positions_recovering(t, lhttp_cstr("room.a")));
    lhttp_positions_free(t);
}

static void test_give_up(void)
{
    lhttp_positions *t = lhttp_positions_new();
    lhttp_gap gap;
    const lhttp_message *m5, *m6;
    lhttp_positions_stats stats;
    CHECK_EQ_INT(check(t, stamped("room.a", 2, "e1", "1", NULL, "m2")), LHTTP_POSITION_DELIVER);
    m5 = stamped("room.a", 5, "e1", "4", NULL, "m5");
    m6 = stamped("room.a", 6, "e1", "5", NULL, "m6");
    CHECK_EQ_INT(check(t, m5), LHTTP_POSITION_GAP);
    CHECK_EQ_INT(check(t, m6), LHTTP_POSITION_HELD);
    CHECK_EQ_INT(lhttp_positions_give_up(t, lhttp_cstr("room.a")), 1);
    CHECK_EQ_INT(lhttp_positions_give_up(t, lhttp_cstr("room.a")), 0);
    /* Kept messages checked again: the same gap is not reported twice. */
    CHECK_EQ_INT(check(t, m5), LHTTP_POSITION_DELIVER);
    CHECK_EQ_INT(check(t, m6), LHTTP_POSITION_DELIVER);
    CHECK_EQ_INT(lhttp_positions_check(t, stamped("room.a", 9, "e1", "8", NULL, "m9"), &gap), LHTTP_POSITION_GAP);
    CHECK_EQ_INT(gap.since, 6);
    lhttp_positions_get_stats(t, &stats);
    CHECK_EQ_INT(stats.gaps, 2);
    CHECK_EQ_INT(stats.gaps_recovered, 0);
    lhttp_positions_free(t);
}

static void test_recovery_replies(void)
{
    lhttp_positions *t = lhttp_positions_new();
    int was_gap = -1;
    unsigned long long offset = 99;
    lhttp_str epoch;
    lhttp_positions_stats stats;
    CHECK_EQ_INT(check(t, stamped("room.a", 1, "e1", "0", NULL, "m1")), LHTTP_POSITION_DELIVER);
    CHECK_EQ_INT(check(t, stamped("room.a", 50, "e1", "40", NULL, "m50")), LHTTP_POSITION_GAP);
    /* The node no longer keeps 2..40: recovered:false, and the next message is taken. */
    CHECK_EQ_INT(lhttp_positions_recovery(t, recovery("room.a", "false", "e1", 1), &was_gap), LHTTP_OK);
    CHECK_EQ_INT(was_gap, 1);
    CHECK_EQ_INT(check(t, stamped("room.a", 50, "e1", "40", NULL, "m50")), LHTTP_POSITION_DELIVER);
    CHECK_EQ_INT(check(t, stamped("room.a", 51, "e1", "50", NULL, "m51")), LHTTP_POSITION_DELIVER);
    lhttp_positions_get_stats(t, &stats);
    CHECK_EQ_INT(stats.gaps_recovered, 0);

    /* A reconnect's recovery in a new epoch: offsets start again. */
    CHECK_EQ_INT(lhttp_positions_recovery(t, recovery("room.a", "false", "e2", 51), &was_gap), LHTTP_OK);
    CHECK_EQ_INT(was_gap, 0);
    CHECK_EQ_INT(lhttp_positions_get(t, lhttp_cstr("room.a"), &offset, &epoch), LHTTP_OK);
    CHECK_EQ_INT(offset, 0);
    CHECK_STR(epoch, "e2");
    CHECK_EQ_INT(check(t, stamped("room.a", 7, "e2", "3", NULL, "kept from 7")), LHTTP_POSITION_DELIVER);

    /* A client cannot pass for the node's recovery reply. */
    CHECK_EQ_INT(lhttp_positions_recovery(t, parse_text("LHTTP/1.0 recovery\r\nchannel:room.a\r\nrecovered:true\r\n"
                                                        "epoch:e9\r\n\r\n"), &was_gap), LHTTP_OK);
    CHECK_EQ_INT(lhttp_positions_get(t, lhttp_cstr("room.a"), &offset, &epoch), LHTTP_OK);
    CHECK_STR(epoch, "e2");

    /* history:none forgets the position. */
    CHECK_EQ_INT(lhttp_positions_recovery(t, parse_text("LHTTP/1.0 recovery\r\nlhttp-node:reply\r\nchannel:room.a\r\n"
                                                        "recovered:false\r\nhistory:none\r\nsince:7\r\n\r\n"),
                                          NULL), LHTTP_OK);
    CHECK_EQ_INT(lhttp_positions_get(t, lhttp_cstr("room.a"), &offset, &epoch), LHTTP_E_NOT_FOUND);
    lhttp_positions_free(t);
}

static void test_forget_and_many_channels(void)
{
    lhttp_positions *t = lhttp_positions_new();
    char name[32];
    int i;
    unsigned long long offset = 0;
    for (i = 0; i < 100; i++) {
        snprintf(name, sizeof(name), "room.%d", i);
        CHECK_EQ_INT(check(t, stamped(name, (unsigned long long)i + 1, "e1", "0", NULL, "x")), LHTTP_POSITION_DELIVER);
    }
    CHECK_EQ_INT(check(t, stamped("room.3", 10, "e1", "9", NULL, "gap")), LHTTP_POSITION_GAP);
    lhttp_positions_forget(t, lhttp_cstr("room.3"));
    CHECK(!lhttp_positions_recovering(t, lhttp_cstr("room.3")));
    CHECK_EQ_INT(lhttp_positions_get(t, lhttp_cstr("room.3"), &offset, NULL), LHTTP_E_NOT_FOUND);
    CHECK_EQ_INT(lhttp_positions_get(t, lhttp_cstr("room.99"), &offset, NULL), LHTTP_OK);
    CHECK_EQ_INT(offset, 100);
    /* Subscribed again: starts afresh, no gap without a position. */
    CHECK_EQ_INT(check(t, stamped("room.3", 10, "e1", "9", NULL, "afresh")), LHTTP_POSITION_DELIVER);
    CHECK_EQ_INT(lhttp_positions_check(NULL, NULL, NULL), LHTTP_E_ARGUMENT);
    lhttp_positions_free(t);
    lhttp_positions_free(NULL);
}

int main(void)
{
    test_gap_recovered();
    test_no_gap();
    test_forged_and_malformed_prev();
    test_give_up();
    test_recovery_replies();
    test_forget_and_many_channels();
    CHECK_DONE();
}
