/* test_status.c - the one table from engine statuses to the server's outcomes and HTTP codes. */
#include "check.h"
#include "status.h"

static void test_engine_to_http(void)
{
    /* Out of memory is the server being overloaded, not broken: 503, which clients retry. */
    CHECK_INT(srv_status_http(srv_status_from_engine(ENGINE_E_NOMEM)), 503);
    /* An input the model cannot take is the client's to fix. */
    CHECK_INT(srv_status_http(srv_status_from_engine(ENGINE_E_INPUT)), 400);
    /* The rest is the server's fault: the model loaded and warmed up, so it must run. */
    CHECK_INT(srv_status_http(srv_status_from_engine(ENGINE_E_BACKEND)), 500);
    CHECK_INT(srv_status_http(srv_status_from_engine(ENGINE_E_MODEL)), 500);
    CHECK_INT(srv_status_http(srv_status_from_engine(ENGINE_E_IO)), 500);
    CHECK_INT(srv_status_from_engine(ENGINE_OK), SRV_OK);
}

static void test_fail_helper(void)
{
    char err[32];
    CHECK_INT(srv_fail(err, sizeof err, SRV_TOO_LARGE, "%d bytes", 5), SRV_TOO_LARGE);
    CHECK_STR(err, "5 bytes");
    CHECK_INT(engine_fail(err, sizeof err, ENGINE_E_INPUT, "layer %s", "x"), ENGINE_E_INPUT);
    CHECK_STR(err, "layer x");
    /* A message longer than the buffer is cut, and still terminated. */
    srv_fail(err, sizeof err, SRV_BAD_REQUEST, "%s", "0123456789012345678901234567890123456789");
    CHECK_INT((long long)strlen(err), (long long)sizeof err - 1);
    CHECK_INT(srv_fail(NULL, 0, SRV_INTERNAL, "nowhere"), SRV_INTERNAL);
}

int main(void)
{
    test_engine_to_http();
    test_fail_helper();
    return check_report("status");
}
