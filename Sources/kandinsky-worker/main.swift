import ArgumentParser

KandinskyWorker.main()
