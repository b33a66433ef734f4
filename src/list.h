/* list.h - internal: not installed. An intrusive, circular, doubly linked
 * list (the shape of libuv's queue and wayland's wl_list).
 *
 * A list head and a member link are the same struct. A link that is on no
 * list points at itself, so "is it linked?" is one compare and removing a
 * link twice is harmless: an object can leave a list from whichever path
 * ends it first without the others having to know. */
#ifndef GEV_SRC_LIST_H
#define GEV_SRC_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct gev__list {
  struct gev__list *next, *prev;
} gev__list;

/* The struct of type T whose member M is the link at p. */
#define gev__container_of(p, T, M) ((T *)(void *)((char *)(p)-offsetof(T, M)))

static inline void gev__list_init(gev__list *l)
{
  l->next = l->prev = l;
}

static inline bool gev__list_empty(const gev__list *l)
{
  return l->next == l;
}

/* For a member link: false once removed (or never added). */
static inline bool gev__list_linked(const gev__list *n)
{
  return n->next != n;
}

static inline void gev__list_append(gev__list *head, gev__list *n)
{
  n->prev = head->prev;
  n->next = head;
  head->prev->next = n;
  head->prev = n;
}

/* Unlinks n and leaves it pointing at itself. Idempotent. */
static inline void gev__list_remove(gev__list *n)
{
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->next = n->prev = n;
}

/* Moves every member of `from` to the empty list `to`; `from` ends empty. */
static inline void gev__list_move_all(gev__list *to, gev__list *from)
{
  if (gev__list_empty(from)) {
    gev__list_init(to);
    return;
  }
  to->next = from->next;
  to->prev = from->prev;
  to->next->prev = to;
  to->prev->next = to;
  gev__list_init(from);
}

#endif
