/* /init of the test initrd in tests/test_uki_boot.py: prints the boot PCRs and the
 * firmware event log on the console, then powers the VM off. Built with gcc -static. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/klog.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <unistd.h>

int main(void) {
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    int console = open("/dev/console", O_RDWR);
    if (console >= 0) {
        dup2(console, 1);
        dup2(console, 2);
    }
    /* Kernel messages on the console would split the lines below (seen under load). */
    klogctl(8 /* SYSLOG_ACTION_CONSOLE_LEVEL */, NULL, 1);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    mount("securityfs", "/sys/kernel/security", "securityfs", 0, NULL);

    static const int pcrs[] = {4, 9, 11, 12, 13};
    for (unsigned i = 0; i < sizeof pcrs / sizeof pcrs[0]; i++) {
        char path[64], value[128] = {0};
        snprintf(path, sizeof path, "/sys/class/tpm/tpm0/pcr-sha256/%d", pcrs[i]);
        int fd = open(path, O_RDONLY);
        ssize_t n = fd >= 0 ? read(fd, value, sizeof value - 1) : -1;
        if (n > 0 && value[n - 1] == '\n')
            value[n - 1] = 0;
        printf("AICERT-PCR %d %s\n", pcrs[i], n > 0 ? value : "unreadable");
    }

    int log = open("/sys/kernel/security/tpm0/binary_bios_measurements", O_RDONLY);
    unsigned char chunk[256];
    ssize_t got;
    while (log >= 0 && (got = read(log, chunk, sizeof chunk)) > 0) {
        printf("AICERT-LOG ");
        for (ssize_t k = 0; k < got; k++)
            printf("%02x", chunk[k]);
        printf("\n");
    }
    printf("AICERT-END\n");
    fflush(stdout);
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
