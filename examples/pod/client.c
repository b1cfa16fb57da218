/* The pod example's client: fetches what its configuration file names
 * from the server in the same pod and prints it.
 *   server=127.0.0.1:8080
 *   fetch=/static/index.html     (one line per path, in order)
 * The server may still be starting: connecting is retried for a while.
 * Exits 1 unless every fetch answers 200. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int connect_to(const char *host, int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct timespec pause = {0, 100 * 1000 * 1000};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
        return -1;
    for (int tries = 0; tries < 100; tries++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(s, (struct sockaddr *)&a, sizeof a) == 0)
            return s;
        close(s);
        nanosleep(&pause, NULL);
    }
    return -1;
}

static int fetch(const char *host, int port, const char *path) {
    char buf[65536];
    size_t len = 0;
    ssize_t n;
    int s = connect_to(host, port);
    if (s < 0) {
        fprintf(stderr, "cannot reach %s:%d\n", host, port);
        return 1;
    }
    int m = snprintf(buf, sizeof buf, "GET %s HTTP/1.0\r\n\r\n", path);
    if (write(s, buf, m) != m) {
        perror("write");
        close(s);
        return 1;
    }
    while (len < sizeof buf - 1 && (n = read(s, buf + len, sizeof buf - 1 - len)) > 0)
        len += n;
    close(s);
    buf[len] = 0;
    char *body = strstr(buf, "\r\n\r\n");
    char *greeting = strstr(buf, "X-Greeting: ");
    int ok = strncmp(buf, "HTTP/1.0 200 ", 13) == 0;
    printf("GET %s: %.*s\n", path, (int)strcspn(buf + 9, "\r\n"), buf + 9);
    if (greeting)
        printf("greeting: %.*s\n", (int)strcspn(greeting + 12, "\r\n"), greeting + 12);
    if (body)
        fputs(body + 4, stdout);
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    const char *conf = argc > 1 ? argv[1] : "/etc/demo/client.conf";
    FILE *f = fopen(conf, "r");
    char line[512], host[64] = "127.0.0.1";
    int port = 8080, failed = 0;
    if (!f) {
        perror(conf);
        return 1;
    }
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (strncmp(line, "server=", 7) == 0 && sscanf(line + 7, "%63[^:]:%d", host, &port) != 2) {
            fprintf(stderr, "%s: server=HOST:PORT\n", conf);
            return 1;
        }
        if (strncmp(line, "fetch=", 6) == 0)
            failed |= fetch(host, port, line + 6);
    }
    fclose(f);
    return failed;
}
