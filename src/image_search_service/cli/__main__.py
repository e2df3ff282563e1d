from image_search_service.cli import main

main()
