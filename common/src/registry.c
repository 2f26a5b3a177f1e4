#include "registry.h"

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
