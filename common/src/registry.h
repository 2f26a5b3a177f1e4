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

#endif
