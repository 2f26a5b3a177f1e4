/* An intrusive doubly linked list (the kernel's shape). An unlinked node
 * has next == NULL, so removal is idempotent. */
#ifndef GW_LIST_H
#define GW_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct gw_link {
    struct gw_link *prev, *next;
};

#define gw_container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

static inline void gw_list_init(struct gw_link *head)
{
    head->prev = head->next = head;
}

static inline bool gw_list_empty(const struct gw_link *head)
{
    return head->next == head;
}

static inline bool gw_linked(const struct gw_link *node)
{
    return node->next != NULL;
}

static inline void gw_list_remove(struct gw_link *node)
{
    if (node->next == NULL)
        return;
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->prev = node->next = NULL;
}

static inline void gw_list_push_back(struct gw_link *head, struct gw_link *node)
{
    gw_list_remove(node);
    node->prev = head->prev;
    node->next = head;
    head->prev->next = node;
    head->prev = node;
}

#endif
