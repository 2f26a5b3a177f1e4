/*
 * The program's module registry, filled by MG_MODULE constructors before
 * main runs. Read-only once main starts.
 */
#ifndef MG_REGISTRY_H
#define MG_REGISTRY_H

#include <modgate/module.h>

/* All registered modules, sorted by name; borrowed for the program's life. */
const mg_module *const *mg__modules(size_t *count);
/* The module called `name`, or NULL. */
const mg_module *mg__module_find(const char *name);

/* What the compiler cannot catch in a declaration: a route without the
 * function its kind calls. 0, or -1 with a message naming the route. */
int mg__module_check(const mg_module *module, char *err, size_t errlen);
/* The same for every module, and no two with one name; 0 or -1. */
int mg__registry_check(char *err, size_t errlen);

#endif
