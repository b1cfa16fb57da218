/* The artifact of the build stage: counts the certificates of the CA
 * bundle the final stage installed, so its output shows both stages. */
#include <stdio.h>
#include <string.h>

#define BUNDLE "/etc/ssl/certs/ca-certificates.crt"

int main(void)
{
    FILE *f = fopen(BUNDLE, "r");
    if (f == NULL) {
        perror(BUNDLE);
        return 1;
    }
    char line[256];
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "-----BEGIN CERTIFICATE-----", 27) == 0)
            n++;
    fclose(f);
    printf("app: %d CA certificates in %s\n", n, BUNDLE);
    return n > 0 ? 0 : 1;
}
