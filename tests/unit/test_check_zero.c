/* test_check_zero.c - a suite that runs no check must fail: check_report() on zero checks. CTest
 * expects this program to fail (WILL_FAIL), so a harness that passes empty suites is caught. */
#include "check.h"

int main(void)
{
    return check_report("check_zero");
}
