/* A tiny HTTP/1.0 file server for the pod example.
 *
 * Reads its settings from a configuration file (the pod gives it one):
 *   port=8080             where to listen, on the loopback the pod shares
 *   greeting=...          sent back in an X-Greeting header
 *   root=/srv             the directory URLs are resolved under
 * One request per connection, one connection at a time; paths with ".."
 * are refused. It serves until it is stopped: as a container's process 1
 * it has no default action for SIGTERM, so it sets one. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char greeting[256] = "";
static char root[256] = "/srv";
static int port = 8080;

static void load_config(const char *path) {
    FILE *f = fopen(path, "r");
    char line[512];
    if (!f) {
        perror(path);
        exit(1);
    }
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (strncmp(line, "port=", 5) == 0)
            port = atoi(line + 5);
        else if (strncmp(line, "greeting=", 9) == 0)
            snprintf(greeting, sizeof greeting, "%.255s", line + 9);
        else if (strncmp(line, "root=", 5) == 0)
            snprintf(root, sizeof root, "%.255s", line + 5);
    }
    fclose(f);
}

static void reply(int c, const char *status, const char *body, size_t len) {
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.0 %s\r\nX-Greeting: %s\r\nContent-Length: %zu\r\n\r\n",
                     status, greeting, len);
    if (write(c, head, n) < 0 || (len && write(c, body, len) < 0))
        perror("write");
}

static void serve(int c) {
    char req[1024], want[512], path[1024], buf[65536];
    ssize_t n = read(c, req, sizeof req - 1);
    if (n <= 0)
        return;
    req[n] = 0;
    if (sscanf(req, "GET %511s", want) != 1 || want[0] != '/' || strstr(want, "..")) {
        reply(c, "400 Bad Request", "bad request\n", 12);
        return;
    }
    snprintf(path, sizeof path, "%s%s", root, want);
    FILE *f = fopen(path, "rb");
    if (!f) {
        reply(c, "404 Not Found", "not found\n", 10);
        return;
    }
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    reply(c, "200 OK", buf, len);
    fprintf(stderr, "served %s (%zu bytes)\n", path, len);
}

static void stop(int sig) {
    (void)sig;
    _exit(0);
}

int main(int argc, char **argv) {
    signal(SIGTERM, stop);
    load_config(argc > 1 ? argv[1] : "/etc/demo/server.conf");
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 8) < 0) {
        perror("listen");
        return 1;
    }
    fprintf(stderr, "listening on 127.0.0.1:%d, serving %s\n", port, root);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0)
            continue;
        serve(c);
        close(c);
    }
}
