/*  Dispatch order with real processes: priorities, FIFO within a priority, credits. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
