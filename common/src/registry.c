#include "registry.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const mg_module **modules;
static size_t nmodules;

void mg_module_register(const mg_module *module)
{
    /* Runs before main, so there is no one to return an error to. */
    const mg_module **grown = realloc(modules, (nmodules + 1) * sizeof(*grown));
    if (grown == NULL) {
        fprintf(stderr, "modgate: out of memory registering module %s\n", module->name);
        abort();
    }
    modules = grown;
    size_t i = nmodules++;
    /* Insertion sort keeps the registry in name order for stable output. */
    while (i > 0 && strcmp(modules[i - 1]->name, module->name) > 0) {
        modules[i] = modules[i - 1];
        i--;
    }
    modules[i] = module;
}

const mg_module *const *mg__modules(size_t *count)
{
    *count = nmodules;
    return modules;
}

const mg_module *mg__module_find(const char *name)
{
    for (size_t i = 0; i < nmodules; i++)
        if (strcmp(modules[i]->name, name) == 0)
            return modules[i];
    return NULL;
}

int mg__module_check(const mg_module *module, char *err, size_t errlen)
{
    for (size_t i = 0; i < module->nroutes; i++) {
        const mg_route *r = &module->routes[i];
        bool has;
        switch (r->kind) {
        case MG_ROUTE_UNARY:
        case MG_ROUTE_UPLOAD:
        case MG_ROUTE_HEALTH: has = r->unary != NULL; break;
        case MG_ROUTE_STREAM: has = r->stream != NULL; break;
        case MG_ROUTE_INIT: has = r->init != NULL; break;
        case MG_ROUTE_WS: has = r->ws != NULL; break;
        default:
            snprintf(err, errlen, "module %s: route %zu has an unknown kind %d", module->name,
                     i + 1, r->kind);
            return -1;
        }
        if (!has) {
            const char *what = r->kind == MG_ROUTE_HEALTH ? "MG_HEALTH"
                               : r->kind == MG_ROUTE_INIT ? "MG_INIT"
                                                          : NULL;
            if (what != NULL)
                snprintf(err, errlen, "module %s: %s has no function", module->name, what);
            else
                snprintf(err, errlen, "module %s: route %s %s has no handler", module->name,
                         r->method && r->method[0] != '*' ? r->method : "ANY",
                         r->pattern ? r->pattern : "(no pattern)");
            return -1;
        }
    }
    return 0;
}

int mg__registry_check(char *err, size_t errlen)
{
    for (size_t i = 0; i < nmodules; i++) {
        /* Sorted by name: a second of a name is next to the first. */
        if (i > 0 && strcmp(modules[i - 1]->name, modules[i]->name) == 0) {
            snprintf(err, errlen, "two modules are named \"%s\" (MG_MODULE names must differ)",
                     modules[i]->name);
            return -1;
        }
        if (mg__module_check(modules[i], err, errlen) != 0)
            return -1;
    }
    return 0;
}
