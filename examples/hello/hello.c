#include <stdio.h>

int main(int argc, char **argv) {
    printf("hello from shipyard%s%s\n", argc > 1 ? ", " : "", argc > 1 ? argv[1] : "");
    return 0;
}
