/*
 * gev.h - the umbrella header: include this one.
 *
 * gev is an event-driven TCP networking library for Linux: an acceptor loop
 * hands connections to worker loops (one thread each: epoll + eventfd +
 * timer heap); each connection owns growing read and write ring buffers; a
 * gev_handler answers with on_connect / on_message / on_close.
 */
#ifndef GEV_GEV_H
#define GEV_GEV_H

#include <gev/common.h>
#include <gev/ringbuffer.h>
#include <gev/loop.h>
#include <gev/server.h>
#include <gev/conn.h>
#include <gev/client.h>
#include <gev/frame.h>
#include <gev/broadcast.h>
#include <gev/pool.h>
#include <gev/stats.h>
#include <gev/log.h>
#include <gev/version.h>
#include <gev/udp.h>
#include <gev/ws.h>

#endif /* GEV_GEV_H */
