"""Reading the photos: the images root's layout (`layout`) and its listing (`listing`), the image files read into
Spark (`image_files`), decoding a photo (`images`), and the roles of the splits (`splits`)."""
