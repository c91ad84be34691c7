/* The whole LHTTP C SDK: the codec, the WebSocket client, the position tracker. */
#ifndef LHTTP_LHTTP_H
#define LHTTP_LHTTP_H

#include "lhttp/codec.h"
#include "lhttp/client.h"
#include "lhttp/positions.h"

#endif
