#include "harness.h"
int sc_tls(fault_run *r)
{
  (void)r;
  return 0;
}
