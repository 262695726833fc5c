/* /init of the module-signature initrd in tests/test_uki_boot.py: prints the kernel's
 * lockdown state, then tries to load each copy of one module named in MODULES from
 * /modules and prints the result, unloading it again after a success so that the next
 * copy is checked too. Built with gcc -static. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/klog.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *const MODULES[] = {"debian", "unsigned", "project", "other"};

int main(void) {
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    int console = open("/dev/console", O_RDWR);
    if (console >= 0) {
        dup2(console, 1);
        dup2(console, 2);
    }
    klogctl(8 /* SYSLOG_ACTION_CONSOLE_LEVEL */, NULL, 1);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    mount("securityfs", "/sys/kernel/security", "securityfs", 0, NULL);

    char lockdown[128] = {0};
    int fd = open("/sys/kernel/security/lockdown", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, lockdown, sizeof lockdown - 1) : -1;
    if (n > 0 && lockdown[n - 1] == '\n')
        lockdown[n - 1] = 0;
    printf("AICERT-LOCKDOWN %s\n", n > 0 ? lockdown : "unreadable");

    for (unsigned i = 0; i < sizeof MODULES / sizeof MODULES[0]; i++) {
        char path[64];
        snprintf(path, sizeof path, "/modules/%s.ko", MODULES[i]);
        int module = open(path, O_RDONLY);
        long rc = module >= 0 ? syscall(SYS_finit_module, module, "", 0) : -1;
        int err = errno;
        if (rc == 0) {
            printf("AICERT-MODULE %s loaded\n", MODULES[i]);
            /* The crypto manager's self-test of the new algorithm holds the module for
             * a moment: retry, for up to 10 s, until it can go. */
            for (int tries = 0; tries < 200; tries++) {
                if (syscall(SYS_delete_module, "michael_mic", O_NONBLOCK) == 0)
                    break;
                usleep(50000);
            }
        } else {
            printf("AICERT-MODULE %s refused %s\n", MODULES[i], strerrorname_np(err));
        }
    }
    printf("AICERT-END\n");
    fflush(stdout);
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
