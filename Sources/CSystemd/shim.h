#ifndef KD_CSYSTEMD_SHIM_H
#define KD_CSYSTEMD_SHIM_H
// libsystemd: readiness notification and the journal. The variadic forms (sd_notifyf, sd_journal_send)
// are not callable from Swift; the Systemd module uses sd_notify and sd_journal_sendv.
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
#include <sys/uio.h>
#endif
