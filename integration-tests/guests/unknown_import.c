/*
 * unknown_import — test guest: imports `env.not_provided_by_ferry`, a function
 * no hub provides, so instantiating (or deploying) it must fail with a clear
 * error naming the missing import. If it ever runs, it prints a line and
 * calls the import.
 *
 * Usage: unknown_import   (no arguments)
 */
#include <stdint.h>
#include <stdio.h>

__attribute__((import_module("env"), import_name("not_provided_by_ferry")))
int32_t not_provided_by_ferry(int32_t x);

int main(void) {
    printf("calling env.not_provided_by_ferry\n");
    fflush(stdout);
    return (int)not_provided_by_ferry(42);
}
