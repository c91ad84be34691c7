/* The whole LHTTP C SDK: the codec and the WebSocket client. */
#ifndef LHTTP_LHTTP_H
#define LHTTP_LHTTP_H

#include "lhttp/codec.h"
#include "lhttp/client.h"

#endif
